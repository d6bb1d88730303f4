"""A caller's `Cancel` says whether it has what it needs (`stop`: a stop string matched, Dynamo's
`stop_generating`) or no longer wants the answer (a kill): the field is trailing, so callers and workers of
the version before, which know only `Cancel(sid)`, still read and send frames the other understands."""

from __future__ import annotations

import msgspec

from dynamo.runtime import wire
from dynamo.runtime.rp_server import RequestContext


class OldCancel(msgspec.Struct, tag="cancel", array_like=True, gc=False):
    """`Cancel` as the version before this field has it."""

    sid: int


def test_a_stop_round_trips_and_a_plain_cancel_is_a_kill():
    [stop, kill] = wire.FrameReader().feed(bytes(wire.encode(wire.Cancel(7, True)) + wire.encode(wire.Cancel(8))))
    assert (stop.sid, stop.stop, kill.sid, kill.stop) == (7, True, 8, False)


def test_frames_of_either_version_are_read_by_the_other():
    old_frame = msgspec.msgpack.encode(OldCancel(3))
    assert msgspec.msgpack.Decoder(wire.Frame).decode(old_frame) == wire.Cancel(3, False)
    new_frame = msgspec.msgpack.encode(wire.Cancel(4, True))
    assert msgspec.msgpack.Decoder(OldCancel | wire.Data).decode(new_frame) == OldCancel(4)


def test_the_first_word_counts():
    """A connection dropped after a graceful stop (a kill) does not turn it into a cancellation."""
    ctx = RequestContext(1, "generate", None)
    assert not ctx.is_stopped() and not ctx.is_killed()
    ctx._stop(True)
    ctx._stop(False)
    assert (ctx.is_stopped(), ctx.is_killed(), ctx.status()) == (True, False, "stopped")
    ctx = RequestContext(2, "generate", None)
    ctx._stop(False)
    assert (ctx.is_stopped(), ctx.is_killed(), ctx.status()) == (True, True, "cancelled")
    assert RequestContext(3, "generate", None).status() == "cancelled"  # ended from elsewhere: counted as before

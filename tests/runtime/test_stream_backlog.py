"""What one caller's response streams hold undelivered is bounded (`rp_backlog.Backlog`): past the limit,
once the caller's own client is behind, every stream of that caller is cancelled at its worker and ends
with `FellBehind`, what they held is dropped, and other streams on the same multiplexed connection go on.
A caller that is merely busy is not cut. Real server and client on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from dynamo.runtime import rp_backlog
from dynamo.runtime.rp_backlog import CONFIRM_SECS, HARD_FACTOR, HARD_STALL, STALL_GRACE, Backlog
from dynamo.runtime.rp_client import BATCH_BYTES, FellBehind, RequestPlaneClient
from dynamo.runtime.rp_server import RequestPlaneServer
from dynamo.runtime.wire import ErrorCode

GENEROUS = 30.0
ITEM = 1024


@pytest.fixture
async def plane():
    """A worker whose `endless` endpoint sends 1 KiB items until cancelled (each cancellation counted), and
    whose `counted` endpoint sends as many numbered items as the payload says."""
    server = RequestPlaneServer("127.0.0.1", 0)
    cancelled: list[bytes] = []

    async def endless(payload, ctx):
        try:
            while True:
                yield payload + b"." * (ITEM - len(payload))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            cancelled.append(payload)
            raise

    async def counted(payload, ctx):
        for i in range(int(payload)):
            yield b"%06d" % i + b"." * (ITEM - 6)
            if i % 64 == 0:
                await asyncio.sleep(0)

    server.add_handler("endless", endless)
    server.add_handler("counted", counted)
    await server.start()
    client = RequestPlaneClient()
    yield server, client, cancelled
    await client.close()
    await server.close()


async def _until(predicate, what: str) -> None:
    deadline = time.monotonic() + GENEROUS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_caller_whose_client_is_behind_has_every_stream_cut_and_the_others_go_on(plane):
    server, client, cancelled = plane
    trips: list[Backlog] = []
    backlog = Backlog(64 * ITEM, trips.append)
    with rp_backlog.counting(backlog):
        a = await client.open_stream(server.address, "endless", b"a")
        b = await client.open_stream(server.address, "endless", b"b")
    other = await client.open_stream(server.address, "counted", b"3000")  # same connection, no backlog
    backlog.waiting_since = time.monotonic() - STALL_GRACE  # its client has taken nothing for that long
    await _until(lambda: backlog.tripped, "the backlog to trip")
    for stream in (a, b):  # what they held was dropped: the error comes first
        with pytest.raises(FellBehind) as err:
            await stream.next_batch(timeout=GENEROUS)
        assert err.value.code == ErrorCode.CANCELLED and "fell too far behind" in str(err.value)
    await _until(lambda: sorted(cancelled) == [b"a", b"b"], "both workers' handlers to be cancelled")
    assert trips == [backlog] and backlog.held == 0
    got = []
    while batch := await other.next_batch(timeout=GENEROUS):
        got += batch
    assert [int(item[:6]) for item in got] == list(range(3000))  # untouched, in order


async def test_a_busy_caller_is_not_cut_however_far_behind_short_of_the_hard_bound(plane):
    server, client, _ = plane
    backlog = Backlog(64 * ITEM)
    with rp_backlog.counting(backlog):
        stream = await client.open_stream(server.address, "counted", b"%d" % (3 * 64))
    await _until(lambda: stream.done, "the whole answer")  # 3x the limit arrived while nobody waited on a client
    assert backlog.peak > 2 * backlog.limit and not backlog.tripped
    got = []
    while batch := await stream.next_batch(timeout=GENEROUS):
        got += batch
    assert len(got) == 3 * 64 and backlog.held == 0


async def test_a_client_waited_on_only_briefly_is_cut_at_the_hard_bound(plane):
    server, client, cancelled = plane
    backlog = Backlog(32 * ITEM)
    with rp_backlog.counting(backlog):
        stream = await client.open_stream(server.address, "endless", b"t")
    backlog.waiting_since = time.monotonic() - HARD_STALL  # waiting, but well within the grace
    await _until(lambda: backlog.tripped, "a trip")
    assert backlog.peak > HARD_FACTOR * backlog.limit
    await _until(lambda: cancelled == [b"t"], "the worker's handler to be cancelled")
    with pytest.raises(FellBehind):
        await stream.next_batch(timeout=GENEROUS)


async def test_a_batch_is_at_most_batch_bytes_and_cancel_drops_the_rest(plane):
    server, client, _ = plane
    backlog = Backlog(1 << 30)
    count = 3 * BATCH_BYTES // ITEM
    with rp_backlog.counting(backlog):
        stream = await client.open_stream(server.address, "counted", b"%d" % count)
        partial = await client.open_stream(server.address, "counted", b"%d" % count)
    await _until(lambda: stream.done and partial.done, "both answers")
    got = []
    while batch := await stream.next_batch(timeout=GENEROUS):
        assert sum(map(len, batch)) <= BATCH_BYTES
        got += batch
    assert [int(item[:6]) for item in got] == list(range(count))
    assert len(await partial.next_batch()) == BATCH_BYTES // ITEM
    assert backlog.held == (count - BATCH_BYTES // ITEM) * ITEM
    partial.cancel()
    assert backlog.held == 0 and await partial.next_batch() == []


async def test_a_pause_of_the_frontends_own_loop_is_not_taken_for_a_stalled_client():
    backlog = Backlog(10)
    backlog.waiting_since = time.monotonic() - 3 * STALL_GRACE  # as the first items after a long pause see it
    backlog.grew(100)
    backlog.sends += 1  # the send, woken by the same pause's end, finished and the next began
    backlog.waiting_since = time.monotonic()
    await asyncio.sleep(4 * CONFIRM_SECS)
    assert not backlog.tripped
    backlog.waiting_since = time.monotonic() - 3 * STALL_GRACE  # a send that stays stuck is confirmed
    backlog.grew(1)
    await asyncio.sleep(4 * CONFIRM_SECS)
    assert backlog.tripped


async def test_a_request_once_cut_opens_no_new_stream(plane):
    server, client, _ = plane
    backlog = Backlog(32 * ITEM)
    with rp_backlog.counting(backlog):
        stream = await client.open_stream(server.address, "endless", b"t")
    backlog.waiting_since = time.monotonic() - STALL_GRACE
    await _until(lambda: backlog.tripped, "a trip")
    with rp_backlog.counting(backlog), pytest.raises(FellBehind):  # a choice routed late starts nothing
        await client.open_stream(server.address, "endless", b"u")
    with pytest.raises(FellBehind):
        await stream.next_batch(timeout=GENEROUS)

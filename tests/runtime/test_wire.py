"""Request-plane framing and the frontend<->worker messages round-trip exactly."""

from __future__ import annotations

import pytest

from dynamo.llm.protocol import (
    LLMEngineOutput,
    PreprocessedRequest,
    SamplingOptions,
    StopConditions,
    output_decoder,
    request_decoder,
    request_encoder,
)
from dynamo.runtime import wire


def test_frames_round_trip_across_arbitrary_splits():
    frames = [wire.Request(1, "generate", b"\x00payload", {"trace": "x"}), wire.Data(1, b"abc"), wire.End(1),
              wire.Error(2, "boom", "overloaded"), wire.Cancel(3)]
    data = b"".join(wire.encode(f) for f in frames)
    for step in (1, 3, 7, len(data)):
        reader = wire.FrameReader()
        got = []
        for i in range(0, len(data), step):
            got.extend(reader.feed(data[i : i + step]))
        assert got == frames


def test_oversized_frame_is_refused():
    reader = wire.FrameReader(max_frame=16)
    with pytest.raises(wire.FrameTooLarge) as refused:
        reader.feed(wire.encode(wire.Data(1, b"x" * 64)))
    assert "TLS" not in str(refused.value)


def test_a_tls_hello_on_a_plaintext_port_is_named_as_such():
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03])  # a ClientHello's first bytes
    with pytest.raises(wire.FrameTooLarge, match="a TLS handshake: the peer calls over TLS, this port serves"):
        wire.FrameReader().feed(hello)


def test_preprocessed_request_round_trip():
    req = PreprocessedRequest(request_id="r1", model="m", token_ids=[1, 2, 3],
                              stop_conditions=StopConditions(max_tokens=5, stop=["x"], ignore_eos=True),
                              sampling_options=SamplingOptions(temperature=0.5, seed=3), eos_token_ids=[5],
                              disaggregated_params={"k": [1, 2]}, prefill_only=True)
    assert request_decoder.decode(request_encoder.encode(req)) == req


def test_engine_output_round_trip():
    out = LLMEngineOutput(token_ids=[7, 8], finish_reason="length", cached_tokens=32)
    assert output_decoder.decode(request_encoder.encode(out)) == out


@pytest.mark.parametrize("code", list(wire.ErrorCode))
def test_error_codes_travel_as_their_plain_strings(code):
    data = wire.encode(wire.Error(4, "why", code))
    assert data == wire.encode(wire.Error(4, "why", code.value))
    (frame,) = wire.FrameReader().feed(data)
    assert type(frame.code) is str and frame.code == code


def test_an_unknown_error_code_still_decodes():
    (frame,) = wire.FrameReader().feed(wire.encode(wire.Error(5, "new", "quota_exceeded")))
    assert frame.code == "quota_exceeded" and frame.code not in set(wire.ErrorCode)


class _RecordingTransport:
    """asyncio.Transport's write side, recording each write (each a syscall on a real socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_extra_info(self, name: str):
        return None


async def test_streamed_frames_leave_together_at_the_iterations_end_and_a_request_at_once():
    import asyncio

    proto = wire.FramedProtocol()
    transport = _RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.send(wire.Data(1, b"a"))
    proto.send(wire.Data(2, b"b"))
    assert transport.writes == []  # coalesced: one write once the iteration's work is done
    await asyncio.sleep(0)
    assert transport.writes == [wire.encode(wire.Data(1, b"a")) + wire.encode(wire.Data(2, b"b"))]
    proto.send(wire.Data(1, b"c"))
    request = wire.Request(3, "generate", b"payload", None)
    proto.send_now(request)
    # A request does not wait behind the rest of the iteration (a burst's other requests being
    # routed), and what was pending goes first, in order.
    assert transport.writes[1:] == [wire.encode(wire.Data(1, b"c")) + wire.encode(request)]
    await asyncio.sleep(0)
    assert len(transport.writes) == 2  # the scheduled flush finds nothing left


def test_a_big_request_is_framed_in_place_and_reads_back():
    big = wire.Request(3, "generate", bytes(range(256)) * 1024, {"k": "v"})  # over IN_PLACE_BYTES
    small = wire.Request(4, "generate", b"p")
    data = wire.encode(big)
    assert isinstance(data, bytearray) and isinstance(wire.encode(small), bytes)
    assert wire.FrameReader().feed(bytes(data) + wire.encode(small)) == [big, small]

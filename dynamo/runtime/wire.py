"""Request-plane framing: the messages that travel on the direct TCP connection
between a caller (frontend, router) and a worker.

Every frame is `u32 big-endian length | msgpack(Frame)`. Many requests share one
connection; each has a stream id chosen by the caller. A response stream is a
sequence of `Data` frames closed by exactly one `End` (Dynamo's `complete_final`)
or `Error`. A stream whose connection breaks before either is *disconnected*:
the caller can tell it apart from a normal end and migrate the request.
A draining worker sends `GoAway` on each connection and keeps it open until the caller
closes it (bounded), so a request already in flight is refused, never lost to a reset.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from typing import Any

import msgspec

HEADER = struct.Struct(">I")
MAX_FRAME = 32 * 1024 * 1024  # DYN_TCP_MAX_MESSAGE_SIZE default in Dynamo
# A TLS handshake record starts 0x16 0x03: read as a frame header, a length of 0x1603xxxx.
TLS_HANDSHAKE_RECORD = 0x1603
TLS_HELLO_HINT = (" (a TLS handshake: the peer calls over TLS, this port serves plaintext; give this process "
                  "DYN_TCP_TLS_CERT_PATH and DYN_TCP_TLS_KEY_PATH, or the peer no DYN_TCP_TLS_* settings)")


class Request(msgspec.Struct, tag="req", array_like=True, gc=False):
    sid: int
    endpoint: str
    payload: bytes
    headers: dict[str, str] | None = None


class Cancel(msgspec.Struct, tag="cancel", array_like=True, gc=False):
    """Caller -> worker: end this stream. `stop`: the caller has what it needs (a stop string matched; Dynamo's
    `stop_generating`), not a `kill` (the client left, a deadline passed): the worker ends it the same way but
    does not count it as cancelled. A trailing field, so both directions stay compatible: an older worker
    ignores it (and counts a cancellation), and a frame without it reads as a kill."""

    sid: int
    stop: bool = False


class Data(msgspec.Struct, tag="data", array_like=True, gc=False):
    sid: int
    payload: bytes


class End(msgspec.Struct, tag="end", array_like=True, gc=False):
    sid: int


class ErrorCode(enum.StrEnum):
    """Why a response stream failed: the `code` of an `Error` frame, and of the `StreamError` a
    caller raises for failures it detects itself. One closed set, so a misspelt code is an
    AttributeError, not a branch that silently never matches; on the wire it is the plain string."""

    INTERNAL = "internal"  # the handler raised something unexpected
    BAD_REQUEST = "bad_request"  # the payload did not decode, or the engine refused its parameters
    INVALID_REQUEST = "invalid_request"  # another spelling of bad_request that callers also accept
    NOT_FOUND = "not_found"  # no such endpoint on this worker
    OVERLOADED = "overloaded"  # the engine's request limit (--engine-request-limit) is reached
    BUSY = "busy"  # the router service: every worker is above its busy threshold
    NO_WORKERS = "no_workers"  # the router service: no worker to route to
    # A request a draining worker refused before starting it: safe to send elsewhere.
    DRAINING = "draining"
    # The request names a LoRA adapter this worker does not hold (unloaded before the caller saw its card go):
    # the worker is fine and the request too; another worker holding the adapter may take it.
    LORA_NOT_LOADED = "lora_not_loaded"
    # The stream broke without its end marker, or the worker cut it at shutdown: migrate.
    DISCONNECTED = "disconnected"
    # A relay (the global router) lost the stream behind it mid-way: migrate, through the same relay,
    # which is healthy (it is not left out of the caller's routing, as a disconnected worker is).
    LOST_DOWNSTREAM = "lost_downstream"
    # Raised by the caller itself, never sent: the request never reached the worker; the caller
    # cancelled the stream; nothing arrived within the caller's deadline; an output of the
    # stream carried an engine error.
    CANNOT_CONNECT = "cannot_connect"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    ENGINE_ERROR = "engine_error"


class Error(msgspec.Struct, tag="err", array_like=True, gc=False):
    sid: int
    message: str
    # `str`, not ErrorCode: a peer's code this version does not know must still decode.
    code: str = ErrorCode.INTERNAL


class GoAway(msgspec.Struct, tag="goaway", array_like=True, gc=False):
    """Server -> caller: this worker is draining. Send no new request on this connection
    (one already on its way is answered with a `DRAINING` error) and close it once idle."""


Frame = Request | Cancel | Data | End | Error | GoAway

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


IN_PLACE_BYTES = 1 << 16


def encode(frame: Any) -> bytes | bytearray:
    """`frame` behind its length header. A request carrying megabytes (image data) is encoded in place
    behind the header, not copied once more to put it in front; a small frame (every token's) the
    faster way, by concatenation."""
    if type(frame) is Request and len(frame.payload) > IN_PLACE_BYTES:
        buf = bytearray(HEADER.size)
        _encoder.encode_into(frame, buf, HEADER.size)
        HEADER.pack_into(buf, 0, len(buf) - HEADER.size)
        return buf
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


class FrameTooLarge(Exception):
    pass


class FrameReader:
    """Incremental parser: feed bytes as they arrive, get whole frames out."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        frames = []
        offset = 0
        size = len(buf)
        with memoryview(buf) as view:
            while size - offset >= 4:
                (length,) = HEADER.unpack_from(buf, offset)
                if length > self.max_frame:
                    raise FrameTooLarge(f"frame of {length} bytes exceeds {self.max_frame}"
                                        + (TLS_HELLO_HINT if length >> 16 == TLS_HANDSHAKE_RECORD else ""))
                end = offset + 4 + length
                if end > size:
                    break
                frames.append(_decoder.decode(view[offset + 4 : end]))
                offset = end
        if offset:
            del buf[:offset]
        return frames


# A peer cut off by a partition sends no FIN or RST: without these a quiet connection would
# wait forever and a stream from a partitioned worker would never fail over. Keep-alive
# probes start after 5 s of silence, every 2 s, 3 misses: ~11 s. A live but busy peer
# answers probes from its kernel, so a slow prefill is not mistaken for a dead peer.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 5, 2, 3
USER_TIMEOUT_MS = 15_000  # unacknowledged data for this long also means the peer is gone


def detect_dead_peer(sock: socket.socket) -> None:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
        if hasattr(socket, name):  # Linux; other systems keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass


class FramedProtocol(asyncio.Protocol):
    """Both ends of a request-plane connection: frame parsing, TCP_NODELAY, and writes
    coalesced per event-loop iteration (all frames produced in one iteration, e.g. every
    sequence's token of one engine step, leave in one syscall)."""

    def __init__(self) -> None:
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            detect_dead_peer(sock)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except Exception as exc:  # a malformed peer loses its connection, nothing more
            self.on_bad_frame(exc)
            self.transport.close()  # type: ignore[union-attr]
            return
        self.on_frames(frames)

    def on_frames(self, frames: list[Any]) -> None:
        raise NotImplementedError

    def on_bad_frame(self, exc: Exception) -> None:
        pass

    def send(self, frame: Any) -> None:
        if self.closed:
            return
        self.pending.append(encode(frame))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def send_now(self, frame: Any) -> None:
        """Write `frame`, and whatever is pending before it, without waiting for the iteration's end:
        a new request is on its worker's critical path, and in a burst the rest of the iteration is
        the routing of every other request that arrived with it."""
        if self.closed:
            return
        self.pending.append(encode(frame))
        self._flush()

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.pending:
            self.pending.clear()
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)  # one frame: as encoded
        self.pending.clear()
        self.transport.write(data)  # type: ignore[union-attr]

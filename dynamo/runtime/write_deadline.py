"""The write deadline of an HTTP connection: a client that takes none of what waits to be written to it
for `HttpLimits.write_timeout` seconds has its connection dropped (`http_protocol.py` hooks it in).

Why: flow control parks the app's `send` until the client reads. A client that stops reading and never
hangs up held its connection, the bytes buffered for it and its request's objects (a stream cut for its
backlog included: its last event waits in `send`) until it closed, which it might never do. nginx's
`send_timeout` (60 s between two successful writes) is the model.

Only progress counts, not speed: a client whose socket accepts *some* bytes within the timeout is never
cut, however slowly it reads. Progress is what the peer's TCP acknowledged (`TCP_INFO`'s `bytes_acked`,
which sees past every buffer on the way: TLS's, the transport's, the kernel's send queue, whose draining
a transport's buffer size alone hides for minutes), else, off Linux, what left the transport's buffer
(there, a client reading very slowly can look stalled while the kernel's send queue drains); a resumed
transport (its buffer drained below the low-water mark) is progress too.

Nothing runs per response chunk: a watch starts at a transport's first `pause_writing` (or at a response
that completes with bytes still buffered) and looks every quarter timeout until nothing waits; a client
that keeps up never pauses its transport, and a fast one that does pays one counter per resume."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Callable

# Linux's struct tcp_info's `tcpi_bytes_acked` (>= 4.1): a u64 at byte 120, after fixed fields that never
# move (the BSDs' tcp_info is laid out otherwise: there, the fallback).
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120
_TCP_INFO_LEN = _BYTES_ACKED_AT + _BYTES_ACKED.size
CHECKS_PER_TIMEOUT = 4  # a stalled connection is dropped between 1 and 1.25 timeouts after its last progress
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


def bytes_acked(sock) -> int | None:
    """Bytes the peer has acknowledged on a TCP socket (Linux), else None (another OS, a Unix socket)."""
    if _TCP_INFO is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError, TypeError):
        return None
    if len(info) < _TCP_INFO_LEN:
        return None
    return _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0]


def reset_on_close(sock) -> None:
    """Make closing `sock` reset the connection and drop its send queue: a plain close leaves the kernel
    holding the unsent bytes (up to the send buffer, MiBs) and probing a closed window for minutes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except (OSError, AttributeError, TypeError):
        pass


class StallClock:
    """When a client last took anything: `taken` is any count that grows only as the client takes bytes."""

    def __init__(self, timeout: float, now: float, taken: int) -> None:
        self.timeout = timeout
        self.progress_at = now
        self.taken = taken

    def stalled(self, now: float, taken: int) -> bool:
        """True once `timeout` seconds have passed since the count last grew."""
        if taken > self.taken:
            self.taken, self.progress_at = taken, now
        return now - self.progress_at >= self.timeout


class WriteWatch:
    """One connection's write deadline, from a first pause until nothing waits for its client: then
    `on_done`; or `on_stall` (which aborts the transport: its socket is set to reset on close), once the
    client has taken nothing for `timeout` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, paused: Callable[[], bool],
                 timeout: float, on_stall: Callable[[], None], on_done: Callable[[], None]) -> None:
        self.loop, self.transport, self.paused = loop, transport, paused
        self.on_stall, self.on_done = on_stall, on_done
        self.resumes = 0  # the protocol counts its transport's resumes: each one is progress
        self._sock = transport.get_extra_info("socket")
        self._buffered = transport.get_write_buffer_size()
        self._drained = 0  # without bytes_acked: what has left the transport's buffer, as seen at each look
        self._interval = timeout / CHECKS_PER_TIMEOUT
        self.clock = StallClock(timeout, loop.time(), self._taken())
        self._timer: asyncio.TimerHandle | None = loop.call_later(self._interval, self._check)

    def _taken(self) -> int:
        acked = bytes_acked(self._sock)
        if acked is None:
            size = self.transport.get_write_buffer_size()
            self._drained += max(0, self._buffered - size)
            self._buffered = size
            acked = self._drained
        return acked + self.resumes

    def _check(self) -> None:
        self._timer = None
        if not self.paused() and not self.transport.get_write_buffer_size():
            self.on_done()  # all of it handed to the kernel: what the client does with it is the kernel's affair
        elif self.clock.stalled(self.loop.time(), self._taken()):
            reset_on_close(self._sock)
            self.on_stall()
        else:
            self._timer = self.loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

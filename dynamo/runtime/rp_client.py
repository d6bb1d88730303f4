"""Request-plane client (caller side): one multiplexed TCP connection per worker
address, reused by every concurrent request to it.

`open_stream()` sends a request and returns a `ResponseStream`; the connection's
single reader (its protocol callbacks) pushes frames into the right stream, so no
task exists per token. A stream that ends without `End`/`Error` (or that
the worker cut at shutdown) raises `Disconnected`, which callers use to migrate
requests; `CannotConnect` means the request never reached the worker; `StreamTimeout`
means nothing arrived within the deadline a caller gave `next_batch()`. After a
worker's `GoAway` its connection takes no new streams and is closed once idle. What a stream holds
undelivered counts against the caller's `Backlog` (`rp_backlog.py`), if it set one: a caller too far
behind has its streams cancelled at their workers, each ending with `FellBehind`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections import deque

from dynamo.runtime import rp_backlog, wire
from dynamo.runtime.rp_backlog import Backlog
from dynamo.runtime.rp_errors import CannotConnect, Disconnected, FellBehind, StreamError, StreamTimeout, stream_error
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import ClientTls
from dynamo.runtime.wire import ErrorCode

__all__ = ["CannotConnect", "Disconnected", "FellBehind", "RequestPlaneClient", "ResponseStream", "StreamError",
           "StreamTimeout"]
log = logging.getLogger(__name__)


# The most `next_batch()` hands over at once (one item, if a single item is larger): a caller decodes a
# batch in one go, and a stream that waited long (thousands of outputs with 20 top logprobs each) would
# hold the event loop for hundreds of milliseconds; decoded, 64 KiB of such outputs are ~1 MB of objects.
BATCH_BYTES = 64 * 1024


class ResponseStream:
    """Items of one response; `next_batch()` hands over what has arrived (up to `BATCH_BYTES`)."""

    __slots__ = ("_conn", "sid", "_items", "_waiter", "done", "_error", "_backlog", "_held")

    def __init__(self, conn: "_ClientConnection", sid: int, backlog: Backlog | None = None) -> None:
        self._conn = conn
        self.sid = sid
        self._items: deque[bytes] = deque()
        self._waiter: asyncio.Future | None = None
        self.done = False
        self._error: StreamError | None = None
        self._backlog = backlog  # None: what it holds is not bounded
        self._held = 0  # bytes of `_items`
        if backlog is not None:
            backlog.join(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push(self, payload: bytes) -> None:
        self._items.append(payload)
        self._held += len(payload)
        if self._backlog is not None:
            self._backlog.grew(len(payload))  # may cut this stream (and its siblings) at once
        self._wake()

    def _taken(self, size: int) -> None:
        """`size` bytes of items went to the caller; a stream that ended and has nothing left leaves the backlog."""
        self._held -= size
        if self._backlog is not None:
            self._backlog.taken(size)
            if self.done and not self._items:
                self._leave()

    def _leave(self) -> None:
        backlog, self._backlog = self._backlog, None
        if backlog is not None:
            backlog.leave(self, self._held)

    def _fell_behind(self, message: str) -> None:
        """Cut by the caller's backlog (`Backlog`); a stream that had ended still ends so, not as a whole answer
        (what it held unread is dropped)."""
        error = FellBehind(message)
        if self.done and self._error is None:
            self._error = error
        self.cancel(error)

    def _finish(self, error: StreamError | None = None) -> None:
        if not self.done:
            self.done = True
            self._error = error
            if not self._items:
                self._leave()
            self._wake()

    async def _wait(self, timeout: float | None) -> bool:
        """Until an item is queued (True) or the stream ended normally (False); raises the
        stream's error, or `StreamTimeout` when `timeout` seconds pass with neither."""
        if self._items:
            return True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._items:
            if self.done:
                if self._error is not None:
                    raise self._error
                return False
            if deadline is not None and loop.time() >= deadline:
                raise StreamTimeout(f"no response within {timeout:g} s")
            self._waiter = loop.create_future()
            # A timer that only wakes the waiter: no task per wait, and an item arriving in the
            # same loop iteration as the deadline still wins (the loop re-checks items first).
            timer = None if deadline is None else loop.call_at(deadline, self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return True

    async def next_batch(self, timeout: float | None = None) -> list[bytes]:
        """The items received so far, oldest first, up to `BATCH_BYTES` (waiting for at least one); [] at
        the normal end. `timeout`: seconds to wait for one before `StreamTimeout` (None: no deadline)."""
        if not await self._wait(timeout):
            return []
        queued = self._items
        if self._held <= BATCH_BYTES:
            items, size = list(queued), self._held
            queued.clear()
        else:
            items = [queued.popleft()]
            size = len(items[0])
            while queued and size + len(queued[0]) <= BATCH_BYTES:
                items.append(queued.popleft())
                size += len(items[-1])
        self._taken(size)
        return items

    def __aiter__(self) -> "ResponseStream":
        return self

    async def __anext__(self) -> bytes:
        if not await self._wait(None):
            raise StopAsyncIteration
        item = self._items.popleft()
        self._taken(len(item))
        return item

    def cancel(self, error: StreamError | None = None, *, stop: bool = False) -> None:
        """Tell the worker to stop (the handler sees CancelledError) and drop what arrived unread: the caller
        is done with the stream, which ends with `error` (a plain "cancelled" one by default); idempotent.
        `stop`: the caller has what it needs (see `stop()`)."""
        self._items.clear()
        self._leave()
        self._held = 0
        if not self.done:
            self._finish(error or StreamError("cancelled", ErrorCode.CANCELLED))
            self._conn.forget(self.sid)
            self._conn.send(wire.Cancel(self.sid, stop))

    def stop(self) -> None:
        """cancel() for a caller that has what it needs (a stop string matched): the worker stops generating
        the same way but does not count the request as cancelled (Dynamo's `stop_generating`; cancel() is its
        `kill`)."""
        self.cancel(stop=True)


class _ClientConnection(wire.FramedProtocol):
    def __init__(self, address: str, on_lost) -> None:
        super().__init__()
        self.address = address
        self.streams: dict[int, ResponseStream] = {}
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self.going_away = False  # the worker sent GoAway: no new streams here
        self.last_frame = time.monotonic()  # when the worker last sent anything (see RequestPlaneClient.listed)

    def on_frames(self, frames: list) -> None:
        self.last_frame = time.monotonic()
        streams = self.streams
        for frame in frames:
            if type(frame) is wire.GoAway:
                self.going_away = True
                continue
            stream = streams.get(frame.sid)
            if stream is None:
                continue
            kind = type(frame)
            if kind is wire.Data:
                stream._push(frame.payload)
            elif kind is wire.End:
                del streams[frame.sid]
                stream._finish()
            elif kind is wire.Error:
                del streams[frame.sid]
                stream._finish(stream_error(frame))
        if self.going_away and not streams:
            self.close_idle()

    def close_idle(self) -> None:
        """A draining worker's connection with nothing left on it: close it (the worker waits for that)."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._finish(Disconnected(f"connection to {self.address} lost"))
        self._on_lost(self)

    def open(self, endpoint: str, payload: bytes, headers: dict[str, str] | None) -> ResponseStream:
        if self.closed:
            raise CannotConnect(f"connection to {self.address} is closed")
        backlog = rp_backlog.current()
        if backlog is not None and backlog.tripped:  # a choice routed after its request was cut starts nothing
            raise FellBehind("the caller fell too far behind reading its response: no new stream")
        sid = next(self._ids)
        stream = ResponseStream(self, sid, backlog)
        self.streams[sid] = stream
        self.send_now(wire.Request(sid, endpoint, payload, headers))
        return stream

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if self.going_away and not self.streams:
            self.close_idle()


def _connect_timeout() -> float:
    return RuntimeSettings.from_env().tcp_connect_timeout


# A worker that left discovery without saying GoAway (its lease lapsed: dead, or hung, which still ACKs TCP
# keep-alives) and has sent nothing on its connection for this long has its streams cut, so callers migrate
# them instead of waiting on it for good; a live worker whose lease merely lapsed keeps streaming, so its
# connection is never that silent unless it runs a prefill this long.
DEPARTED_SILENT_SECS = 10.0
WATCH_INTERVAL_SECS = 1.0


class RequestPlaneClient:
    """Connection pool keyed by worker address ("host:port")."""

    def __init__(self, connect_timeout: float | None = None, tls: ClientTls | None = None) -> None:
        self.connect_timeout = connect_timeout if connect_timeout is not None else _connect_timeout()
        self.tls = tls  # None: plaintext
        self._conns: dict[str, _ClientConnection] = {}
        self._connecting: dict[str, asyncio.Future] = {}
        self._listed: set[str] | None = None  # None: the caller does not tell (no departed-worker watch)
        self._unlisted_since: dict[str, float] = {}  # address -> when the watch first saw it unlisted
        self._watch: asyncio.Task | None = None

    def listed(self, addresses: set[str]) -> None:
        """The worker addresses discovery lists now. A connection to one no longer listed is watched: once
        silent for DEPARTED_SILENT_SECS with streams open (and no GoAway), it is cut and each stream on it
        fails as `Disconnected`."""
        self._listed = set(addresses)
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._cut_silent_departed(), name="rp-departed")

    async def _cut_silent_departed(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECS)
            for conn in self._departed_and_silent(time.monotonic()):
                log.warning("worker at %s left discovery and has sent nothing for %.0f s: cutting its %d stream(s)",
                            conn.address, time.monotonic() - conn.last_frame, len(conn.streams))
                conn.transport.abort()  # connection_lost fails every stream on it as Disconnected

    def _departed_and_silent(self, now: float) -> list[_ClientConnection]:
        """Connections to workers unlisted for the whole window and silent through it: a lease that lapsed
        and was re-put at once, or a prefill worker quiet during a long prefill, is neither."""
        if self._listed is None:
            return []
        listed = self._listed
        for address in [a for a in self._unlisted_since if a in listed or a not in self._conns]:
            del self._unlisted_since[address]
        out = []
        for conn in list(self._conns.values()):
            if conn.address in listed or conn.going_away or not conn.streams or conn.transport is None:
                continue
            since = self._unlisted_since.setdefault(conn.address, now)
            if now - since >= DEPARTED_SILENT_SECS and now - conn.last_frame >= DEPARTED_SILENT_SECS:
                out.append(conn)
        return out

    async def open_stream(
        self, address: str, endpoint: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> ResponseStream:
        conn = self._conns.get(address)
        if conn is None or conn.closed or conn.going_away:
            conn = await self._connect(address)
        return conn.open(endpoint, payload, headers)

    async def _connect(self, address: str) -> _ClientConnection:
        pending = self._connecting.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._connecting[address] = future
        try:
            conn = await self._dial(address)
            self._conns[address] = conn
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else CannotConnect(str(exc)))
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._connecting.pop(address, None)

    async def _dial(self, address: str) -> _ClientConnection:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        tls: dict = {}
        if self.tls is not None:
            tls = {"ssl": self.tls.context, "server_hostname": self.tls.hostname(host),
                   "ssl_handshake_timeout": self.tls.handshake_timeout}
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _ClientConnection(address, self._lost), host, int(port), **tls),
                self.connect_timeout + (self.tls.handshake_timeout if self.tls is not None else 0.0),
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise CannotConnect(f"cannot connect to worker at {address}: {_reason(exc, self.tls is not None)}") from None
        return conn

    def _lost(self, conn: _ClientConnection) -> None:
        if self._conns.get(conn.address) is conn:
            del self._conns[conn.address]

    def drop(self, address: str) -> None:
        conn = self._conns.pop(address, None)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()


def _reason(exc: BaseException, tls: bool) -> str:
    """Why a dial failed, never blank; over TLS, a handshake the worker dropped is most often a worker
    that serves plaintext (a TLS caller's settings without the worker's)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = "timed out"
    else:
        text = str(exc) or type(exc).__name__
    # A plaintext worker drops a TLS caller's handshake: a reset, or EOF before the handshake completed.
    dropped = isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError,
                               asyncio.IncompleteReadError))
    if tls and dropped:
        text += (" (the TLS handshake did not complete: does the worker serve TLS too? This caller has "
                 "DYN_TCP_TLS_* settings; a worker without DYN_TCP_TLS_CERT_PATH/KEY_PATH speaks plaintext)")
    return text

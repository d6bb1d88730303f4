"""Request-plane server (worker side): accepts direct TCP connections, runs one
task per request that drives the endpoint handler's async generator, and streams
its items back as `Data` frames closed by `End` or `Error`.

A `Cancel` frame or a dropped connection cancels the request's task, which raises
CancelledError inside the handler: that is how a client disconnect reaches the
engine. A `Cancel` with `stop` set (the caller has what it needs: a stop string matched) ends it
the same way, but its status is `stopped`, not `cancelled` (`RequestContext.is_killed`).
Frames produced in one event-loop iteration are written with one syscall.

Once draining (`stop_accepting`), each connection gets a `GoAway`, and a request
arriving on one (sent before its caller saw the GoAway or the worker leaving
discovery) ends at once with a `draining` error and never starts: the caller sends it
elsewhere. `close()` keeps connections open until their callers close them (bounded),
so a scale-down cannot lose a request to a connection reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable

import msgspec

from dynamo.runtime import wire
from dynamo.runtime.tls import ServerTls
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

_encode_item = msgspec.msgpack.Encoder().encode

# After GoAway, how long a worker waits for its callers to close their connections.
LINGER_SECONDS = 2.0


class HandlerError(Exception):
    """Raised by a handler to end a stream with a typed error (code travels to the caller): an
    ErrorCode, or a code relayed unchanged from another worker's stream."""

    def __init__(self, message: str, code: str = ErrorCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code


class RequestContext:
    """Per-request state visible to handlers."""

    __slots__ = ("sid", "endpoint", "headers", "_stopped", "_killed")

    def __init__(self, sid: int, endpoint: str, headers: dict[str, str] | None) -> None:
        self.sid = sid
        self.endpoint = endpoint
        self.headers = headers or {}
        self._stopped = False
        self._killed = False

    def is_stopped(self) -> bool:
        """The caller ended the stream, either way (Dynamo's `is_stopped`)."""
        return self._stopped

    def is_killed(self) -> bool:
        """The caller ended the stream because it no longer wants the answer (its client left, a deadline
        passed, a dropped connection), not because it has what it needs (a stop string matched)."""
        return self._killed

    def status(self) -> str:
        """How a stream the caller ended is counted: `stopped` (it had what it needed) or `cancelled`."""
        return "stopped" if self._stopped and not self._killed else "cancelled"

    def _stop(self, graceful: bool) -> None:
        # The first word counts: a connection dropped after a graceful stop does not make it a kill.
        if not self._stopped:
            self._stopped, self._killed = True, not graceful


Handler = Callable[[Any, RequestContext], AsyncIterator[Any]]
Decode = Callable[[bytes], Any]


class _Connection(wire.FramedProtocol):
    def __init__(self, server: "RequestPlaneServer") -> None:
        super().__init__()
        self.server = server
        self.tasks: dict[int, tuple[asyncio.Task, RequestContext]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)

    def on_bad_frame(self, exc: Exception) -> None:
        log.warning("request plane: bad frame from peer: %s", exc)

    def on_frames(self, frames: list) -> None:
        for frame in frames:
            if type(frame) is wire.Request:
                self._start(frame)
            elif type(frame) is wire.Cancel:
                self._cancel(frame.sid, frame.stop)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for sid in list(self.tasks):
            self._cancel(sid)

    def _start(self, frame: wire.Request) -> None:
        if self.server.draining:
            self.send(wire.Error(frame.sid, "worker is shutting down; send the request to another worker",
                                 ErrorCode.DRAINING))
            return
        entry = self.server.handlers.get(frame.endpoint)
        if entry is None:
            self.send(wire.Error(frame.sid, f"no endpoint {frame.endpoint!r} on this worker", ErrorCode.NOT_FOUND))
            return
        handler, decode = entry
        self.server.last_request = time.monotonic()
        if decode is None:
            request = frame.payload
        else:  # typed endpoint: decoded once here, a bad payload never reaches the handler
            try:
                request = decode(frame.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.send(wire.Error(frame.sid, f"malformed request: {exc}", ErrorCode.BAD_REQUEST))
                return
        ctx = RequestContext(frame.sid, frame.endpoint, frame.headers)
        task = asyncio.get_running_loop().create_task(self._run(handler, request, frame.endpoint, ctx,
                                                                len(frame.payload)))
        self.tasks[frame.sid] = (task, ctx)

    def _cancel(self, sid: int, graceful: bool = False) -> None:
        entry = self.tasks.get(sid)
        if entry is not None:
            entry[1]._stop(graceful)
            entry[0].cancel()

    async def _run(self, handler: Handler, request: Any, endpoint: str, ctx: RequestContext,
                   received: int = 0) -> None:
        sid = ctx.sid
        server = self.server
        server.on_request_start(endpoint)
        started = time.monotonic()
        status, error, sent = "success", None, 0
        try:
            gen = handler(request, ctx)
            try:
                async for item in gen:
                    if self.closed:
                        break
                    payload = item if type(item) is bytes else _encode_item(item)
                    sent += len(payload)
                    self.send(wire.Data(sid, payload))
            finally:
                await gen.aclose()
            if not self.closed and not ctx._stopped:
                self.send(wire.End(sid))
        except asyncio.CancelledError:
            status = ctx.status()
        except HandlerError as exc:
            status, error = "error", str(exc.code)
            self.send(wire.Error(sid, str(exc), exc.code))
        except Exception as exc:
            status, error = "error", ErrorCode.INTERNAL.value
            log.exception("handler for %s failed", endpoint)
            self.send(wire.Error(sid, f"{type(exc).__name__}: {exc}", ErrorCode.INTERNAL))
        finally:
            self.tasks.pop(sid, None)
            server.on_request_end(endpoint, status, time.monotonic() - started, received, sent, error)


class RequestPlaneServer:
    """One TCP listener per process; endpoints register handlers by name."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ServerTls | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls  # None: plaintext
        self.handlers: dict[str, tuple[Handler, Decode | None]] = {}
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self.draining = False
        self.last_request = 0.0  # time.monotonic() of the last request taken (the grace period ends when quiet)
        self.on_request_start: Callable[[str], None] = lambda endpoint: None
        # (endpoint, status, seconds, request bytes, response bytes, the error code when it failed, else None)
        self.on_request_end: Callable[[str, str, float, int, int, str | None], None] = lambda *_: None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add_handler(self, endpoint: str, handler: Handler, request_type: type | None = None) -> None:
        """`request_type` (a msgspec type): payloads are decoded to it before the handler
        runs, and one that does not decode ends the stream with `bad_request`."""
        decode = msgspec.msgpack.Decoder(request_type).decode if request_type is not None else None
        self.handlers[endpoint] = (handler, decode)

    def inflight(self) -> int:
        return sum(len(conn.tasks) for conn in self.connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = {} if self.tls is None else {"ssl": self.tls.context, "ssl_handshake_timeout": self.tls.handshake_timeout}
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=1024, **tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_accepting(self) -> None:
        """Drain mode: no new connections, GoAway on the open ones, new requests refused."""
        if self._server is not None:
            self._server.close()
        if not self.draining:
            self.draining = True
            for conn in self.connections:
                conn.send(wire.GoAway())

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` for in-flight requests to finish; True if all did."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.inflight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return self.inflight() == 0

    async def close(self, linger: float = LINGER_SECONDS) -> None:
        """Cut what still runs (its callers see a disconnect and can migrate it), then wait up to
        `linger` for callers to close their idle connections after GoAway, so a request still on
        its way is refused rather than lost to a reset; then close what is left."""
        await self.stop_accepting()
        for conn in list(self.connections):
            for sid in list(conn.tasks):
                conn._cancel(sid)
                conn.send(wire.Error(sid, "worker shut down before the request finished",
                                     ErrorCode.DISCONNECTED))
        deadline = asyncio.get_running_loop().time() + linger
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass

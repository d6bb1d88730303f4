"""Minimal ASGI helpers shared by the frontend and the worker system server, and the embedded
uvicorn server they run on. The hot paths avoid framework layers (see
shared/reference/python-http-streaming.md); every connection is served under `HttpLimits`
(deadlines, head size, connection cap: http_limits.py, enforced by http_protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from typing import Any, Awaitable, Callable

import msgspec
import uvicorn

from dynamo.runtime.http_limits import HttpGuard, HttpLimits
from dynamo.runtime.http_protocol import GuardedHttpToolsProtocol

json_encode = msgspec.json.Encoder().encode

# How often a retiring server looks for connections to close, and whether the last has (`retire_connections`).
RETIRE_SWEEP_SECS = 0.1

JSON_HEADERS = [(b"content-type", b"application/json")]
TEXT_HEADERS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


async def send_bytes(send: Callable, status: int, body: bytes, headers: list | None = None) -> None:
    headers = [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Callable, status: int, obj: Any) -> None:
    await send_bytes(send, status, json_encode(obj))


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Callable, limit: int) -> bytes | bytearray:
    """The whole body, refused (`BodyTooLarge`) as soon as it passes `limit`. Chunks are
    appended to one growing buffer (realloc of a large buffer remaps pages, no copy) instead
    of joined at the end, which would copy the whole body in one go on the event loop."""
    buffer: bytearray | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        more = message.get("more_body", False)
        if buffer is None:
            if not more:
                return chunk
            buffer = bytearray(chunk)
        else:
            buffer += chunk
        if not more:
            return buffer


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _each(connection: object, action: str, *args: Any) -> None:
    """`action` on one of the server's connections, if it is one of ours (`GuardedHttpToolsProtocol`; anything
    else uvicorn may have put there is left to its own close); an error in one connection is logged, never
    raised: the hand-off and the sweep go on with the others."""
    if not isinstance(connection, GuardedHttpToolsProtocol):
        return
    try:
        getattr(connection, action)(*args)
    except Exception:
        logging.getLogger(__name__).exception("retiring a connection: %s failed", action)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn server that leaves signal handling to its owning process."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class BindError(OSError):
    """An embedded HTTP server could not listen on its address."""


class EmbeddedHttpServer:
    """Runs an ASGI app on uvicorn inside the current event loop, owned as a task. `limits` (default:
    `HttpLimits()`) bound what a connection may cost; `guard` tallies what they refused. `sockets`: listening
    sockets to serve on instead of binding host:port (inherited ones, `listen_fds.py`)."""

    def __init__(self, app: Callable[..., Awaitable[None]], host: str, port: int, limits: HttpLimits | None = None,
                 sockets: list[socket.socket] | None = None, **options: Any) -> None:
        self.sockets = sockets or None
        self.guard = HttpGuard(limits or HttpLimits())
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            server_header=False,
            date_header=False,
            access_log=False,
            # uvicorn's own handlers would write text lines into a JSON-lines log: its loggers
            # propagate to the process's handler instead (runtime/logs.py).
            log_config=None,
            log_level=options.pop("log_level", "warning"),
            loop="none",
            http=functools.partial(GuardedHttpToolsProtocol, guard=self.guard),  # type: ignore[arg-type]
            # No WebSocket upgrades (nothing here serves one): with `websockets` or `wsproto` installed, uvicorn's
            # "auto" would put an unguarded protocol among the connections a hand-off retires.
            ws=options.pop("ws", "none"),
            **options,
        )
        self.server = _EmbeddedServer(config)
        self.guard.connections = self.server.server_state.connections
        self.task: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=self.sockets)
        except SystemExit:
            # uvicorn logs a bind error, then exits the process (code 3, a traceback from the loop): here
            # it is the owner's error to report and act on, raised before the task's loop can see it.
            config = self.server.config
            raise BindError(f"cannot bind {config.host}:{config.port}: address in use or not ours") from None

    async def start(self, deadline: float = 30.0) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the bind error
                raise RuntimeError("HTTP server exited during startup")
            if loop.time() > end:
                raise TimeoutError("HTTP server did not start in time")
            await asyncio.sleep(0.01)

    def stop_listening(self) -> None:
        """Close the listening sockets (a new connection is refused, or, on an inherited socket, taken by another
        process holding it); open connections, and the streams on them, go on until `stop`."""
        for server in self.server.servers:
            server.close()

    def retire_connections(self) -> None:
        """Hand the clients to the other processes sharing the listening socket (after `stop_listening`): every
        connection closes after its next answer (`Connection: close`), and one with none under way once it has
        been quiet long enough (`GuardedHttpToolsProtocol.retire`), so that no request its client already sent,
        or is about to send on a fresh connection, is dropped. `connections_closed` waits for the last."""
        self.guard.retiring = True
        for connection in list(self.server.server_state.connections):
            _each(connection, "retire")
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        loop, connections = asyncio.get_running_loop(), self.server.server_state.connections
        while True:
            now = loop.time()
            for connection in list(connections):
                _each(connection, "close_if_idle", now)
            await asyncio.sleep(RETIRE_SWEEP_SECS)

    async def connections_closed(self, timeout: float, unless: asyncio.Event | None = None) -> bool:
        """Wait (at most `timeout`, or until `unless` is set) for the open connections to close; True if they did."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.server.server_state.connections:
            if loop.time() >= end or (unless is not None and unless.is_set()):
                return False
            await asyncio.sleep(RETIRE_SWEEP_SECS)
        return True

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.server.config.port

    async def stop(self, timeout: float = 5.0) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except Exception as exc:  # pragma: no cover - shutdown noise
            logging.getLogger(__name__).debug("http server stop: %s", exc)

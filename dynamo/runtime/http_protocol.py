"""The HTTP/1.1 connection boundary: uvicorn's httptools protocol with `HttpLimits` enforced on
the socket, before a request reaches the app (limits and refusal answers: `http_limits.py`).

- A connection beyond the cap is answered 503 at once and closed; the open ones are untouched.
- A request head is counted as its bytes arrive, before the parser sees them: past the limit
  the parser is never fed more (its URL and header-value appends are quadratic), and the
  client gets 431, or 414 when most of the head is its URL. Too many header fields: 431.
- A head must be complete within the header deadline, a body must keep arriving (the gap and
  rate deadlines): 408 and close. Time the app spends not reading (reading paused because
  the app's buffer is full, a `100-continue` not yet sent) is not the client's.
- A client that takes nothing of what waits to be written to it for the write deadline has its
  connection aborted: the app's `send` returns as for a client that hung up (`write_deadline.py`).

The streaming path is untouched: nothing here runs per response chunk. Per connection there is
one timer (its first head's deadline); per request, a flag test per received chunk, and a timer
only for a head or body that spans reads; per response, a look at the write buffer's size; a
write watch only once the transport pauses writing (the client is behind).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dynamo.runtime.http_limits import HttpGuard, error_response
from dynamo.runtime.write_deadline import WriteWatch

# How long an answered connection waits for its client to read the answer and close before it is
# dropped, and how many may wait at once (beyond that, they are closed at once).
LINGER_SECS = 2.0
MAX_LINGERING = 256

# On a hand-off (`retire`): a connection quiet for this long since its last answer is closed (its client is not
# mid-way through sending the next request: sending one that instant is the race every HTTP server has), and
# one that has not yet sent its first request counts as busy for this long after it was made (Go's StateNew
# rule: a client that just connected is about to send). Every other connection closes after its next answer.
RETIRE_IDLE_SECS = 1.5
RETIRE_NEW_SECS = 3.0


class _HeadRefused(Exception):
    """Raised in a parser callback to stop the parse; `send_400_response` then answers with `_refusal`."""


# Where uvicorn's "Invalid HTTP request received." goes for a parse we stopped ourselves: nowhere.
_SILENT = logging.Logger(__name__ + ".refused")
_SILENT.disabled = True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP connection under its server's `HttpGuard`."""

    def __init__(self, *args: Any, guard: HttpGuard, **kwargs: Any) -> None:
        # Before uvicorn's __init__: the `logger` property reads them.
        self._refusal: tuple[int, str, str, str] | None = None  # (status, reason, message, code)
        self._refused = False  # answered by the guard: later data is discarded
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.limits = guard.limits
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between requests, or a request's head not yet complete
        self._in_body = False
        self._head_bytes = 0
        self._heads = 0  # heads completed on this connection
        self._lingering = False
        self._body_start = self._last_data = 0.0
        self._body_bytes = 0
        self._writes: WriteWatch | None = None  # the write deadline, while something waits for the client
        self._active = self.loop.time()  # when data last came in or an answer was last sent (`retire`)
        self._retiring = False
        self._newest_keep_alive = True  # the newest cycle's own keep-alive, before a hand-off turned it off

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.guard.cap:
            self.transport = transport
            self.guard.refused["connection_limit"] += 1
            self._refused = True
            transport.write(error_response(503, f"too many open connections (limit {self.guard.cap}); retry later",
                                           "too_many_connections", "service_unavailable", b"retry-after: 1\r\n"))
            self._linger()
            return
        super().connection_made(transport)
        self._active = self.loop.time()
        self._arm(self.limits.header_timeout, self._head_expired)  # a connection that never sends is closed too
        if self.guard.retiring:  # accepted just before the server stopped listening
            self.retire()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._stop_write_watch()
        if self._lingering:
            self._lingering = False
            self.guard.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the client's rest, read and dropped while it reads our answer
        self._active = self.loop.time()
        if self._in_head:
            room = self.limits.head_bytes - self._head_bytes
            if len(data) > room:
                self._overflowing_head(data, room)
                return
            self._head_bytes += len(data)
        elif self._in_body:
            self._last_data = self.loop.time()
            self._body_bytes += len(data)
        super().data_received(data)
        # A deadline only for a head or body that spans reads: most requests come whole in one.
        if self._timer is None and not self._refused:
            if self._in_body:
                self._arm(self.limits.body_timeout, self._body_expired)
            elif self._in_head and self._head_bytes:
                self._arm(self.limits.header_timeout, self._head_expired)

    # -- uvicorn's parse-error path, for a parse we stopped --------------------------------------
    # A parser callback that refuses the head raises `_HeadRefused`; httptools reports it as a parse
    # error, on which uvicorn's `data_received` warns on `self.logger` and calls `send_400_response`.
    # While such a refusal is pending, the warning goes to a silent logger and the 400 becomes our
    # answer; a genuinely invalid request keeps uvicorn's warning and 400.
    @property
    def logger(self) -> logging.Logger:
        return _SILENT if self._refusal_pending() else self._logger

    @logger.setter
    def logger(self, logger: logging.Logger) -> None:
        self._logger = logger

    def send_400_response(self, msg: str) -> None:
        if self._refusal_pending():
            self._refuse_head(*self._refusal)
            return
        super().send_400_response(msg)

    def _refusal_pending(self) -> bool:
        return self._refusal is not None and not self._refused

    def _overflowing_head(self, data: bytes, room: int) -> None:
        """`data` would take the head past its limit: only what fits is parsed; the rest is parsed
        only if that completed the head, otherwise the request is refused."""
        heads = self._heads
        self._head_bytes += room
        super().data_received(data[:room])
        if self._refused or self.transport.is_closing():
            return
        if self._heads == heads:
            mostly_url = len(getattr(self, "url", b"")) * 2 > self._head_bytes
            self._refuse_head(*((414, "url_too_long", "the request URL is too long", "uri_too_long") if mostly_url
                                else (431, "head_too_large", "the request headers are too large",
                                      "request_header_fields_too_large")))
            return
        self.data_received(data[room:])

    # -- parser callbacks ------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.header_count:
            self._refusal = (431, "too_many_headers", f"more than {self.limits.header_count} header fields",
                             "too_many_headers")
            raise _HeadRefused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel()
        self._in_head, self._in_body = False, True
        self._heads += 1
        self._body_start = self._last_data = self.loop.time()
        self._body_bytes = 0
        previous = self.cycle
        super().on_headers_complete()
        if self._retiring and self.cycle is not None:
            if previous is not None and previous is not self.cycle and not previous.response_started:
                # a request pipelined behind it: the earlier one keeps the connection open for it (closing
                # after the earlier answer would drop it); only the newest is answered with `Connection: close`
                previous.keep_alive = self._newest_keep_alive
            self._newest_keep_alive = self.cycle.keep_alive
            self.cycle.keep_alive = False  # answered with `Connection: close`

    def on_message_complete(self) -> None:
        self._cancel()
        self._in_head, self._in_body = True, False
        self._head_bytes = 0
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._cancel()  # the connection is the WebSocket protocol's from here
        self._stop_write_watch()
        self._in_head = self._in_body = False
        super().handle_websocket_upgrade()

    # -- writes ----------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        if self.flow is None:  # refused at connect: `_linger` bounds it
            return
        super().pause_writing()
        if self._writes is None:
            self._watch_writes()

    def resume_writing(self) -> None:
        if self.flow is None:
            return
        super().resume_writing()
        if self._writes is not None:
            self._writes.resumes += 1  # the client took enough to unpause us: progress, at no cost

    def on_response_complete(self) -> None:
        self._active = self.loop.time()
        super().on_response_complete()
        # An answer that ends with bytes still buffered (the kernel's send queue full) keeps its
        # connection open until they are written, however long that takes, even once closed.
        if self._writes is None and self.transport.get_write_buffer_size():
            self._watch_writes()

    def _watch_writes(self) -> None:
        if self.limits.write_timeout and not self._lost():
            self._writes = WriteWatch(self.loop, self.transport, self._write_paused, self.limits.write_timeout,
                                      self._write_stalled, self._stop_write_watch)

    def _write_paused(self) -> bool:
        return self.flow is not None and self.flow.write_paused

    def _write_stalled(self) -> None:
        self._writes = None
        self.guard.refused["write_timeout"] += 1
        # No answer can reach a client that reads nothing: drop its buffered bytes. connection_lost follows,
        # ending the app's pending send and telling its receive the client is gone.
        self.transport.abort()

    def _stop_write_watch(self) -> None:
        if self._writes is not None:
            self._writes.stop()
            self._writes = None

    def _lost(self) -> bool:
        return self.parser is None  # uvicorn's connection_lost drops the parser

    # -- hand-off ------------------------------------------------------------------------------------
    def retire(self) -> None:
        """This server hands its clients to others (the replicas sharing its listening socket): the connection
        ends after its next answer (`Connection: close`: its client reconnects, through the shared socket), or
        earlier, idle, by `close_if_idle`. Unlike uvicorn's `shutdown`, a request already sent (in the socket
        buffer, half-read) or about to be (a connection just made) is never dropped by it."""
        self._retiring = True
        if self._busy():  # the newest request (any pipelined before it are answered first, and kept open for it)
            self._newest_keep_alive = self.cycle.keep_alive
            self.cycle.keep_alive = False

    def close_if_idle(self, now: float) -> bool:
        """Close a retiring connection that has no request under way and has been quiet long enough
        (`RETIRE_IDLE_SECS`; `RETIRE_NEW_SECS` for one that has not sent its first request); True once closed
        or closing."""
        if self.transport.is_closing():
            return True
        if self._refused or self._busy() or self.pipeline or self._head_bytes or self._in_body:
            return False  # an answer under way, a request arriving, or a refusal that closes itself
        if now - self._active < (RETIRE_IDLE_SECS if self._heads else RETIRE_NEW_SECS):
            return False
        self.transport.close()
        return True

    # -- deadlines -------------------------------------------------------------------------------
    def _head_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._busy():  # the next request waits behind a response: its clock starts after that
            self._arm(self.limits.header_timeout, self._head_expired)
            return
        if not self._head_bytes:  # nothing of a request: close without an answer, as nginx does
            self.guard.refused["header_timeout"] += 1
            self.transport.close()
            return
        self._refuse_head(408, "header_timeout",
                          f"request headers not received within {self.limits.header_timeout:g} s", "request_timeout")

    def _body_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or cycle.waiting_for_100_continue or (cycle.response_started and
                                                                        not cycle.response_complete):
            # the app is not reading (or is answering): the wait is ours, and the clock starts again
            self._body_start = self._last_data = now
            self._body_bytes = 0
            self._arm(self.limits.body_timeout, self._body_expired)
            return
        due = self._last_data + self.limits.body_timeout
        if self.limits.body_min_rate:
            due = min(due, self._body_start + self.limits.body_timeout + self._body_bytes / self.limits.body_min_rate)
        if now < due:
            self._timer = self.loop.call_at(due, self._body_expired)
            return
        self.guard.refused["body_timeout"] += 1
        self._refused = True
        if cycle.response_complete:  # answered without its body: nothing more to say
            self.transport.close()
            return
        cycle.disconnected = True  # the app reading the body sees the client gone; its answer goes nowhere
        cycle.message_event.set()
        self.transport.write(error_response(408, "request body not received in time", "request_timeout"))
        self._linger()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    # -- refusals --------------------------------------------------------------------------------
    def _refuse_head(self, status: int, reason: str, message: str, code: str) -> None:
        self.guard.refused[reason] += 1
        self._refused = True
        self._cancel()
        if self._busy():  # mid-response: no room for another answer on this connection
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self.transport.close()
            return
        self.transport.write(error_response(status, message, code))
        self._linger()

    def _linger(self) -> None:
        """Close after the answer without losing it: half-close, then drop what the client still
        sends until it closes (EOF closes the transport) or `LINGER_SECS` pass. Closing at once
        with the client's data unread would reset the connection, often before it read the answer."""
        transport = self.transport
        if self.guard.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        if self.flow is not None:
            self.flow.resume_reading()
        transport.write_eof()
        self._lingering = True
        self.guard.lingering += 1
        self._cancel()
        self._timer = self.loop.call_later(LINGER_SECS, transport.abort)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

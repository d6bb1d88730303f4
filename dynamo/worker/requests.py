"""The worker's `generate` endpoint, written once for every engine: admission
(`--engine-request-limit`), a unique engine request id per attempt, error mapping to
request-plane codes, the abort of a request whose stream ends unfinished, and its
"request received" / "request completed" log lines.

The request arrives already decoded: the endpoint is served with
`request_type=PreprocessedRequest`, so a malformed payload is a `bad_request` before it
gets here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import AsyncIterator

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.runtime.logs import RequestEvents
from dynamo.runtime.rp_server import HandlerError, RequestContext
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.adapter import EngineAdapter, LoraNotLoaded

log = logging.getLogger(__name__)


class RequestHandler:
    def __init__(self, adapter: EngineAdapter, request_limit: int = 0, events: RequestEvents | None = None) -> None:
        self.adapter = adapter
        self.request_limit = request_limit
        self.inflight = 0
        now = time.monotonic()
        self.last_activity = now  # a request's start or end: when the endpoint went idle, for the canary
        # Engine progress, for the canary's stall check: the last output the engine streamed (an error is
        # not progress) or the last step it reported (`progress()`: a forward pass or a KV event, so a long
        # chunked prefill that streams nothing still counts), and when the endpoint last went from idle to
        # busy. A request's arrival is not progress: new requests keep arriving at a hung engine.
        self.last_progress = now
        self.busy_since = now
        self._ids = itertools.count()
        self.events = events or RequestEvents(jsonl=False)

    async def generate(self, request: PreprocessedRequest, ctx: RequestContext, *,
                       probe: bool = False) -> AsyncIterator[LLMEngineOutput]:
        """The endpoint's handler; `probe`: the worker's own canary, never refused by the request limit (a hung
        engine holding the limit's worth of requests must still be probed)."""
        if not probe and self.request_limit and self.inflight >= self.request_limit:
            raise HandlerError(f"Server overloaded: {self.inflight} requests in flight "
                               f"(--engine-request-limit {self.request_limit})", ErrorCode.OVERLOADED)
        # Unique per attempt: a migrated request reuses its id on another (or this) worker.
        request_id = f"{request.request_id}-{next(self._ids)}"
        if not self.inflight:
            self.busy_since = time.monotonic()
        self.inflight += 1
        self.last_activity = time.monotonic()
        finished = False
        trace = WorkerTrace(self.events, request) if self.events.enabled() else None
        stream = None
        try:
            # Inside the try: an adapter that refuses the request while building it (bad parameters) answers
            # a typed error and gives its in-flight slot back, as one that refuses it while streaming does.
            stream = self.adapter.generate(request, request_id)
            async for out in stream:
                if out.error is None:
                    self.progress()
                if trace is not None:
                    trace.tokens += len(out.token_ids)
                finished = out.finish_reason is not None
                yield out
                if finished:
                    break
        except HandlerError as exc:  # the adapter's own typed refusal: an error, not a cancellation
            if trace is not None:
                trace.failed(exc, exc)
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = self.handler_error(exc)  # mapped once: the log line says the type errors_total counts
            if trace is not None:
                trace.failed(err, exc)
            raise err from None
        finally:
            self.inflight -= 1
            self.last_activity = time.monotonic()
            if trace is not None:
                trace.completed(finished, ctx)
            if not finished:  # client went away (CancelledError / GeneratorExit) or an error
                await asyncio.shield(self._abort(request_id))
            if stream is not None:
                await stream.aclose()

    def progress(self) -> None:
        """The engine moved: it streamed output, ran a step or stored/removed KV blocks."""
        self.last_progress = time.monotonic()

    def stalled_for(self, now: float) -> float:
        """Seconds the engine has made no progress while requests were in flight (0 while idle)."""
        return now - max(self.last_progress, self.busy_since) if self.inflight else 0.0

    def handler_error(self, exc: Exception) -> Exception:
        """Engine exception -> typed HandlerError; unknown ones stay as they are (-> internal)."""
        code = self.adapter.error_code(exc)
        if code is None and isinstance(exc, LoraNotLoaded):  # not the client's fault: another worker may hold it
            code = ErrorCode.LORA_NOT_LOADED
        elif code is None and isinstance(exc, (ValueError, TypeError)):  # validation: bad params, prompt too long
            code = ErrorCode.BAD_REQUEST
        return HandlerError(str(exc), code) if code else exc

    async def _abort(self, request_id: str) -> None:
        try:
            await self.adapter.abort(request_id)
        except Exception as exc:  # engine already dead: nothing left to free
            log.debug("abort %s: %s", request_id, exc)


class WorkerTrace:
    """A request's "request received" / "request completed" lines in the worker's log, under the
    frontend's `request_id` (the wire request's) and `trace_id`. Its status: `success`, `error` (an
    ERROR line), `cancelled` (the caller no longer wanted it: its client left, a deadline passed) or
    `stopped` (the caller had what it needed: a stop string matched); neither of the last two is an error."""

    __slots__ = ("events", "ids", "started", "tokens", "error")

    def __init__(self, events: RequestEvents, request: PreprocessedRequest) -> None:
        self.events, self.started, self.tokens = events, time.monotonic(), 0
        self.error: dict[str, str] | None = None  # the failure's error_type and error_detail
        self.ids = {"request_id": request.request_id, "trace_id": request.trace_id}
        session = request.routing.session_id if request.routing is not None else None
        events.emit(logging.INFO, "request received", **self.ids, model=request.model,
                    prompt_tokens=len(request.token_ids), prefill_only=request.prefill_only or None,
                    **({"session_id": session} if session else {}))  # an agent session's id, when it has one

    def failed(self, err: Exception, exc: Exception) -> None:
        """The request failed with `err` (what the caller is answered, `exc` mapped): the error type is the one
        the server's errors_total counts it under (an unmapped exception is `internal`), the detail `exc`'s own."""
        code = err.code if isinstance(err, HandlerError) else ErrorCode.INTERNAL
        self.error = {"error_type": str(code), "error_detail": f"{type(exc).__name__}: {exc}"}

    def completed(self, finished: bool, ctx: RequestContext | None = None) -> None:
        """`ctx`: how the caller ended a stream that did not finish (None: as a cancellation)."""
        if finished:
            status = "success"
        elif self.error is not None:
            status = "error"
        else:
            status = ctx.status() if ctx is not None else "cancelled"
        fields = {**self.ids, "status": status, "elapsed_ms": round((time.monotonic() - self.started) * 1e3, 3),
                  "output_tokens": self.tokens}
        if self.error is not None:
            fields.update(self.error)
        self.events.emit(logging.ERROR if status == "error" else logging.INFO, "request completed", **fields)

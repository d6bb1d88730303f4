"""Request tracing in the frontend: the identity of one API request (its `request_id`, from the
client's `x-dynamo-request-id` header or made here, and its `trace_id`, from a W3C
`traceparent` header or made here), carried to the workers on the wire request, and the
lines its life leaves in the log, with NVIDIA Dynamo's messages and fields:

- "request received": `request_id`, `trace_id`, `model`, `endpoint`, `request_type` (and an agent
  session's `session_id`, `parent_session_id`);
- "http response sent": `status` (the HTTP status, as text), ERROR for 4xx/5xx;
- "request cancelled by client" (WARN) when the client goes away first;
- "request completed": `status` (success / error / cancelled), `elapsed_ms`, and for a failure
  `error_type` and `error_detail`, ERROR unless it succeeded.

A header that is not a UUID is refused (400) before the request is received.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, Awaitable, Callable

from dynamo.frontend import errors
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import RequestOutcome
from dynamo.runtime.asgi import header
from dynamo.runtime.logs import RequestEvents

REQUEST_ID_HEADER = b"x-dynamo-request-id"
SCOPE_KEY = "dynamo.trace"  # where the trace of a request rides in its ASGI scope
TRACED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
                          "/v1/classify", "/v1/pooling", "/v1/messages"})
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# HTTP status -> the `error_type` of a failed request's "request completed" line.
_ERROR_TYPES = {400: "invalid_request", 404: "not_found", 413: "payload_too_large", 422: "invalid_request",
                429: "overloaded", 499: "cancelled", 503: "unavailable", 504: "timeout", 529: "overloaded"}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "internal" if status >= 500 else "invalid_request")


def trace_id_of(scope: dict) -> str:
    """The trace id of a W3C `traceparent` header (an all-zero id is invalid), else a new one."""
    parent = header(scope, b"traceparent")
    match = _TRACEPARENT.match(parent.strip().lower()) if parent else None
    if match and match.group(1) != b"0" * 32:
        return match.group(1).decode()
    return uuid.uuid4().hex


def request_id_of(scope: dict, default: str) -> str:
    """The client's `x-dynamo-request-id` (a UUID, written canonically), else `default`."""
    given = header(scope, REQUEST_ID_HEADER)
    if given is None:
        return default
    try:
        return str(uuid.UUID(given.decode("latin-1").strip()))
    except ValueError:
        raise errors.bad_request("x-dynamo-request-id must be a valid UUID", None, "invalid_request_id") from None


class RequestTrace:
    """One API request's identity and its log lines; the frontend's handlers fill in what they learn."""

    __slots__ = ("events", "request_id", "trace_id", "client_id", "started", "model", "endpoint", "request_type",
                 "outcome", "http_status", "received_logged")

    def __init__(self, events: RequestEvents, request_id: str, trace_id: str) -> None:
        self.events, self.request_id, self.trace_id = events, request_id, trace_id
        self.client_id = False  # the request id is the client's (x-dynamo-request-id), not unique by construction
        self.started = time.monotonic()
        self.model = self.endpoint = self.request_type = None
        self.outcome: RequestOutcome | None = None
        self.http_status: int | None = None
        self.received_logged = False

    def received(self, model: str, endpoint: str, request_type: str, session_id: str | None = None,
                 parent_session_id: str | None = None, agent_context: dict[str, Any] | None = None) -> None:
        self.model, self.endpoint, self.request_type = model, endpoint, request_type
        self.received_logged = True
        # An agent session's requests are found in the log by its id (and a subagent's by its parent's).
        session = {k: v for k, v in (("session_id", session_id), ("parent_session_id", parent_session_id)) if v}
        if agent_context is not None:
            session["agent_context"] = agent_context
        self.events.emit(logging.INFO, "request received", **self._ids(), model=model, endpoint=endpoint,
                         request_type=request_type, **session)

    def wrap_send(self, send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
        """`send`, noting the response status as it starts ("http response sent")."""
        async def traced(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.http_status = message["status"]
                level = logging.ERROR if self.http_status >= 400 else logging.INFO
                self.events.emit(level, "http response sent", **self._ids(), status=str(self.http_status))
            await send(message)
        return traced

    def cancelled_by_client(self) -> None:
        self.events.emit(logging.WARNING, "request cancelled by client", **self._ids())

    def wire_id(self) -> str:
        """The id the wire requests are named after: this request's own, made unique when the client
        chose it (a client may send one id twice at once; routing bookings are keyed by it)."""
        return f"{self.request_id}.{uuid.uuid4().hex[:8]}" if self.client_id else self.request_id

    def completed(self, error: ApiError | None = None, crash: BaseException | None = None) -> None:
        """The last line: the outcome the handler reported, else what the error or status says."""
        if not self.received_logged or not self.events.enabled(logging.ERROR):
            return  # refused before it was a request (bad header, body or route): "http response sent" says it
        if isinstance(crash, asyncio.CancelledError):
            self.outcome, crash = RequestOutcome.CANCELLED, None
        outcome = self.outcome or (RequestOutcome.SUCCESS if error is None and crash is None else RequestOutcome.ERROR)
        fields: dict[str, Any] = {**self._ids(), "model": self.model, "endpoint": self.endpoint,
                                  "request_type": self.request_type, "status": str(outcome),
                                  "elapsed_ms": round((time.monotonic() - self.started) * 1e3, 3)}
        if outcome == RequestOutcome.CANCELLED:
            fields.update(error_type="cancelled", error_detail="the client disconnected")
        elif error is not None:
            fields.update(error_type=error_type(error.status), error_detail=error.message)
        elif crash is not None:
            fields.update(error_type="internal", error_detail=f"{type(crash).__name__}: {crash}")
        elif outcome == RequestOutcome.ERROR:
            fields.update(error_type=error_type(self.http_status or 500), error_detail="the stream ended with an error")
        self.events.emit(logging.INFO if outcome == RequestOutcome.SUCCESS else logging.ERROR, "request completed",
                         **fields)

    def _ids(self) -> dict[str, str]:
        return {"request_id": self.request_id, "trace_id": self.trace_id}


def start_trace(events: RequestEvents, scope: dict, send: Callable[[dict], Awaitable[None]]):
    """(the trace of a new API request, kept in its scope; `send` noting the response status).
    The client's request id is taken by `adopt_client_id`, which may refuse it."""
    trace = RequestTrace(events, str(uuid.uuid4()), trace_id_of(scope))
    scope[SCOPE_KEY] = trace
    # Unlogged, the status is not needed: no extra await on every chunk of the stream.
    return trace, (trace.wrap_send(send) if events.enabled(logging.ERROR) else send)


def adopt_client_id(trace: RequestTrace, scope: dict) -> None:
    """Take the client's `x-dynamo-request-id`; 400 when it is not a UUID (logged as a response only)."""
    chosen = request_id_of(scope, trace.request_id)
    trace.client_id = chosen != trace.request_id
    trace.request_id = chosen

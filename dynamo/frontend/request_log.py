"""Request tracing in the frontend: the identity of one API request (its `request_id`, from the
client's `x-dynamo-request-id` header or made here, and its `trace_id`, from a W3C
`traceparent` header or made here), carried to the workers on the wire request, and the
lines its life leaves in the log, with NVIDIA Dynamo's messages and fields:

- "request received": `request_id`, `trace_id`, `model`, `endpoint`, `request_type` (and an agent
  session's `session_id`, `parent_session_id`);
- "http response sent": `status` (the HTTP status, as text), ERROR for 4xx/5xx;
- "request cancelled by client" (WARN) when the client goes away first;
- "request completed": `status` (success / error / cancelled), `elapsed_ms`, and for a failure
  `error_type` (the metrics' `error_type`) and `error_detail`, ERROR when it failed.

Every line carries the client's `x-request-id` as `x_request_id` when it sent one, and the response
echoes that header (as Dynamo does, for any route). An `x-dynamo-request-id` that is not a UUID is
ignored with a WARN line, as in Dynamo 1.6.1: the request goes on under an id made here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any, Awaitable, Callable

from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import ErrorType, RequestOutcome, error_type_of
from dynamo.runtime.asgi import header
from dynamo.runtime.logs import RequestEvents

REQUEST_ID_HEADER = b"x-dynamo-request-id"
CLIENT_ID_HEADER = b"x-request-id"  # the client's own id: echoed, and logged as `x_request_id`
SCOPE_KEY = "dynamo.trace"  # where the trace of a request rides in its ASGI scope
TRACED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
                          "/v1/classify", "/v1/pooling", "/v1/messages"})
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_of(scope: dict) -> str:
    """The trace id of a W3C `traceparent` header (an all-zero id is invalid), else a new one."""
    parent = header(scope, b"traceparent")
    match = _TRACEPARENT.match(parent.strip().lower()) if parent else None
    if match and match.group(1) != b"0" * 32:
        return match.group(1).decode()
    return uuid.uuid4().hex


def request_id_of(scope: dict) -> tuple[str | None, str | None]:
    """(the client's `x-dynamo-request-id` as a UUID written canonically, else None; the header's text
    when it is not a UUID, else None)."""
    given = header(scope, REQUEST_ID_HEADER)
    if given is None:
        return None, None
    text = given.decode("latin-1")
    try:
        return str(uuid.UUID(text.strip())), None
    except ValueError:
        return None, text


def echo_request_id(scope: dict, send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
    """`send`, adding the client's `x-request-id` header to the response, when it sent one."""
    given = header(scope, CLIENT_ID_HEADER)
    if given is None:
        return send

    async def echoing(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (CLIENT_ID_HEADER, given)]}
        await send(message)
    return echoing


class RequestTrace:
    """One API request's identity and its log lines; the frontend's handlers fill in what they learn."""

    __slots__ = ("events", "request_id", "trace_id", "x_request_id", "client_id", "started", "model", "endpoint",
                 "request_type", "outcome", "stream_error", "http_status", "received_logged", "tallied")

    def __init__(self, events: RequestEvents, request_id: str, trace_id: str, x_request_id: str | None = None) -> None:
        self.events, self.request_id, self.trace_id, self.x_request_id = events, request_id, trace_id, x_request_id
        self.client_id = False  # the request id is the client's (x-dynamo-request-id), not unique by construction
        self.started = time.monotonic()
        self.model = self.endpoint = self.request_type = None
        self.outcome: RequestOutcome | None = None
        self.stream_error: ApiError | None = None  # what ended a stream that had sent its 200 (an error event)
        self.http_status: int | None = None
        self.received_logged = False
        self.tallied = False  # a handler counts it in the request metrics (else a refusal counts in __call__)

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
        """The last line: the outcome the handler reported, else what the error or status says (`crash`: a
        cancelled task, or the ConnectionError of a client that left, is a cancellation)."""
        if not self.received_logged or not self.events.enabled(logging.ERROR):
            return  # refused before it was a request (a bad body or route): "http response sent" says it
        if isinstance(crash, ConnectionError) and self.outcome != RequestOutcome.CANCELLED:
            self.cancelled_by_client()  # it hung up before its run began (waiting for a worker)
        if isinstance(crash, (asyncio.CancelledError, ConnectionError)):
            self.outcome, crash = RequestOutcome.CANCELLED, None
        error = error or self.stream_error
        outcome = self.outcome or (RequestOutcome.SUCCESS if error is None and crash is None else RequestOutcome.ERROR)
        fields: dict[str, Any] = {**self._ids(), "model": self.model, "endpoint": self.endpoint,
                                  "request_type": self.request_type, "status": str(outcome),
                                  "elapsed_ms": round((time.monotonic() - self.started) * 1e3, 3)}
        if outcome == RequestOutcome.CANCELLED:  # Dynamo's words; INFO, the client's choice
            fields.update(error_type=ErrorType.CANCELLED.value, error_detail="cancelled before completion")
        elif error is not None:
            fields.update(error_type=error_type_of(error.status).value, error_detail=error.message)
        elif outcome == RequestOutcome.ERROR:
            detail = f"{type(crash).__name__}: {crash}" if crash is not None else "the request failed"
            fields.update(error_type=ErrorType.INTERNAL.value, error_detail=detail)
        self.events.emit(logging.ERROR if outcome == RequestOutcome.ERROR else logging.INFO, "request completed",
                         **fields)

    def _ids(self) -> dict[str, str]:
        ids = {"request_id": self.request_id, "trace_id": self.trace_id}
        if self.x_request_id is not None:
            ids["x_request_id"] = self.x_request_id
        return ids


def start_trace(events: RequestEvents, scope: dict, send: Callable[[dict], Awaitable[None]]):
    """(the trace of a new API request, kept in its scope; `send` noting the response status).
    The client's request id is taken by `adopt_client_id`."""
    given = header(scope, CLIENT_ID_HEADER)
    trace = RequestTrace(events, str(uuid.uuid4()), trace_id_of(scope),
                         given.decode("latin-1") if given is not None else None)
    scope[SCOPE_KEY] = trace
    # Unlogged, the status is not needed: no extra await on every chunk of the stream.
    return trace, (trace.wrap_send(send) if events.enabled(logging.ERROR) else send)


def adopt_client_id(trace: RequestTrace, scope: dict) -> None:
    """Take the client's `x-dynamo-request-id`; one that is not a UUID is ignored, with a WARN line."""
    chosen, invalid = request_id_of(scope)
    if invalid is not None:
        trace.events.emit(logging.WARNING, f"x-dynamo-request-id header must be a valid UUID, got: {invalid}",
                          **trace._ids())
    if chosen is not None:
        trace.client_id, trace.request_id = True, chosen

"""The OpenAI-compatible HTTP surface as a raw ASGI app (no framework on the
per-token path). Routes: POST /v1/chat/completions, /v1/completions, /v1/responses[/input_tokens],
/v1/embeddings, /v1/classify, /v1/pooling, /v1/rerank, /v2/rerank, /v1/score (and /v1/messages under
--enable-anthropic-api); GET /v1/models, /v1/models/{id}[/ready], /health, /live, /metrics, /openapi.json.

Requests are read, decoded, validated and converted here, and counted in the request metrics; which of
them get in (drain, concurrency limit, a model's workers) is `admission.Admission`; a generation request's
preparation for its model's card and its run is `request_path.RequestPath`; the generation itself (fan-out,
output stage, framing) is `generation.GenerationRun`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Awaitable, Callable

from prometheus_client import generate_latest

from dynamo.frontend import errors, inprocess, speculative_prefill
from dynamo.frontend.admission import Admission
from dynamo.frontend.model_routes import ModelRoutes, health_report
from dynamo.frontend.admin import BusyThresholdAdmin
from dynamo.frontend.openapi import OpenApi
from dynamo.frontend.anthropic import PATH as ANTHROPIC_PATH, error_body
from dynamo.frontend.messages_run import AnthropicApi
from dynamo.frontend.agent_context import agent_context
from dynamo.frontend.intake import SHAPE_CHECK_BYTES, early_refusal, read_limited
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.pooling_api import ROUTES as POOLING_ROUTES, PooledStreams, PoolingRoute
from dynamo.frontend.errors import OVERLOADED_STATUS, ApiError
from dynamo.frontend.client_backlog import STREAM_BACKLOG_MB
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.metrics import FrontendMetrics, RequestOutcome, RequestTally, error_type_of
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.routing_hints import routing_hints
from dynamo.frontend.speculative_prefill import SpeculativePrefill
from dynamo.llm.media import MediaPolicy
from dynamo.llm.protocol import RoutingHints
from dynamo.frontend.openai import ChatCompletionRequest, decode_request
from dynamo.frontend.validation import validate_chat, validate_completion
from dynamo.frontend.demand import Demand
from dynamo.frontend.request_log import (SCOPE_KEY, TRACED_PATHS, RequestTrace, adopt_client_id, echo_request_id,
                                         start_trace)
from dynamo.frontend.request_path import RequestPath, RunInputs, tokenized_prompt
from dynamo.frontend.responses import ResponsesApi
from dynamo.frontend.replicas import adopt_background
from dynamo.frontend.responses_store import ResponseStore
from dynamo.frontend.responses_truncation import ConversationFit
from dynamo.runtime.logs import RequestEvents
from dynamo.runtime.memory import HeapTrimmer
from dynamo.runtime.asgi import JSON_HEADERS, TEXT_HEADERS, json_encode, send_bytes, send_json

log = logging.getLogger(__name__)

PREP_THREADS = 2
TRIM_AFTER_BYTES = 1 << 20
CLOSE_HEADERS = [*JSON_HEADERS, (b"connection", b"close")]


def _error_headers(error: ApiError) -> list:
    """An error's response headers: JSON, and Retry-After where the error says when to come back."""
    if error.retry_after is None:
        return JSON_HEADERS
    return [*JSON_HEADERS, (b"retry-after", str(error.retry_after).encode())]


class FrontendApp:
    def __init__(self, models: ModelManager, dispatcher: Dispatcher, metrics: FrontendMetrics, *,
                 body_limit: int, concurrency_limit: int = 0, overload_status: int = OVERLOADED_STATUS,
                 health_extra: Callable[[], dict] | None = None,
                 reasoning_field: str = "reasoning_content", request_events: RequestEvents | None = None,
                 admin_api: bool = True, anthropic: AnthropicApi | None = None,
                 stream_dispatch: tuple[bool, bool] = (False, False), responses_store: ResponseStore | None = None,
                 wait_for_workers: float = 0.0, media_policy: MediaPolicy | None = None) -> None:
        self.models = models
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.body_limit = body_limit
        self.stream_backlog_mb = STREAM_BACKLOG_MB  # --http-stream-backlog-limit-mb (client_backlog.py)
        self.health_extra = health_extra
        self.reasoning_field = reasoning_field
        self.media_policy = media_policy or MediaPolicy()  # which image references requests may carry (DYN_MM_*)
        self.stream_dispatch = stream_dispatch  # (tool calls, reasoning): Dynamo's early-dispatch events
        self.request_events = request_events or RequestEvents(jsonl=False)
        self.admission = Admission(models, metrics, concurrency_limit, overload_status, wait_for_workers)
        self.demand = Demand(models, metrics)
        if self.admission.worker_wait.enabled:  # a migrating request waits for its model's next worker too
            dispatcher.worker_wait = self.admission.worker_wait.for_request
        self.prep_pool = ThreadPoolExecutor(max_workers=PREP_THREADS, thread_name_prefix="dyn-prep")
        self.path = RequestPath(self)  # a generation request's preparation and run
        self.speculative = SpeculativePrefill(dispatcher, self.prep_pool, metrics.registry, metrics.prefix)
        self.trimmer = HeapTrimmer(self.prep_pool)  # after big bodies
        self.on_close: list[Callable[[], Awaitable[None]]] = []  # route owners' own tasks (the Batch API's)
        self.routes: dict[tuple[str, str], Callable] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            **{("POST", path): partial(self.pooled, route) for path, route in POOLING_ROUTES.items()},
            ("GET", "/health"): self.health,
            ("GET", "/live"): self.live,
            ("GET", "/metrics"): self.prometheus,
        }
        responses = ResponsesApi(responses_store)
        enforce = dispatcher.prefill is not None and dispatcher.prefill.policy.enforce
        model_api = ModelRoutes(models, lambda: self.admission.initial.check(), enforce)  # ready once past the gate
        self.routes.update(responses.routes(self))
        self.routes.update(model_api.routes())
        # (method, path prefix) -> handler, for paths that carry an id
        self.prefix_routes: list[tuple[str, str, Callable]] = [*model_api.prefix_routes(),
                                                               *responses.prefix_routes()]
        if admin_api:  # operators tune busy thresholds live (DYN_DISABLE_FRONTEND_ADMIN_API leaves it out)
            self.routes.update(BusyThresholdAdmin(dispatcher.policy, models, self.request_body).routes())
        if anthropic is not None:  # --enable-anthropic-api
            self.routes.update(anthropic.routes(self))
        self.routes.update(OpenApi(self.routes, self.prefix_routes).route())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        adopt_background(scope)
        route = self._route(scope)
        trace, error, crash, send = None, None, None, echo_request_id(scope, send)
        try:
            if route is None:
                raise self._no_route(scope)
            if scope["method"] == "POST" and scope["path"] in TRACED_PATHS:
                trace, send = start_trace(self.request_events, scope, send)
                adopt_client_id(trace, scope)
            try:
                await route(scope, receive, send)
            except errors.BEYOND_LIMITS as exc:  # what a body beyond any parser's or wire's limits raises
                raise errors.beyond_limits(exc, scope["path"]) from None
        except ApiError as exc:
            error = exc
            # The traceback's frames hold the request body (up to the body limit) in a cycle that
            # only a full GC would free: drop them now.
            exc.__traceback__ = None
            # Anthropic's clients read their own error shape
            body = error_body(exc) if scope["path"].startswith(ANTHROPIC_PATH) else exc.body()
            if exc.status == 413:
                # The rest of the body is unread: close instead of reading and discarding it.
                await send_bytes(send, 413, json_encode(body), CLOSE_HEADERS)
            else:
                await send_bytes(send, exc.status, json_encode(body), _error_headers(exc))
        except ConnectionError as exc:  # the client left: its last line says cancelled
            crash = exc
        except BaseException as exc:
            crash = exc
            raise
        finally:
            if trace is not None:
                trace.completed(error, crash)
                if error is not None and not trace.tallied:  # refused before it was counted (not JSON, too big)
                    self.metrics.failed(error_type_of(error.status), error.code)

    def _route(self, scope: dict) -> Callable | None:
        found = self.routes.get((scope["method"], scope["path"])) or self._prefix_route(scope)
        if found is None and scope["method"] == "HEAD":  # a GET route's headers (the server drops the body)
            found = self.routes.get(("GET", scope["path"]))
        return found

    def _prefix_route(self, scope: dict) -> Callable | None:
        return next((handler for method, prefix, handler in self.prefix_routes
                     if scope["method"] == method and scope["path"].startswith(prefix)), None)

    def _no_route(self, scope: dict) -> ApiError:
        known = {path for _, path in self.routes}
        if scope["path"] in known:
            return errors.method_not_allowed(scope["method"], scope["path"])
        error = errors.no_route(scope["path"])
        if scope["path"].startswith(ANTHROPIC_PATH):  # an Anthropic client pointed at a frontend without it
            error.message += ": Anthropic's Messages API is served with --enable-anthropic-api"
        return error

    # -- shutdown (the drain: `admission`) ------------------------------------------------------
    async def close(self) -> None:
        self.admission.close()
        for close in self.on_close:
            await close()
        await self.speculative.close()
        self.prep_pool.shutdown(wait=False, cancel_futures=True)

    # -- simple routes ---------------------------------------------------------------------------
    async def live(self, scope, receive, send) -> None:
        await send_json(send, 200, {"status": "live", "message": "Service is live"})

    async def health(self, scope, receive, send) -> None:
        held = self.models.held() if self.admission.worker_wait.enabled else []
        body = health_report(self.models.listed(), self.health_extra() if self.health_extra is not None else {}, held,
                             self.models.cards())
        if self.admission.draining:
            body.update(status="draining", message="shutting down: not accepting new requests")
            await send_json(send, 503, body)
            return
        if not self.admission.initial.check():  # --router-min-initial-workers: not serving yet
            # Requests held for workers (--wait-for-workers-secs) are held for these too: health_report's word
            # stands there (healthy for held models); otherwise they are refused, so not healthy.
            waiting = self.admission.initial.waiting_message()
            if self.admission.worker_wait.enabled:
                body["message"] = f"{body['message']}; {waiting}"
            else:
                body.update(status="unhealthy", message=waiting)
        # 200 either way: Kubernetes liveness must not restart a frontend whose workers are down.
        await send_json(send, 200, body)

    async def prometheus(self, scope, receive, send) -> None:
        self.demand.scrape(self.dispatcher.migration_limit)
        await send_bytes(send, 200, generate_latest(self.metrics.registry), TEXT_HEADERS)

    # -- generation ---------------------------------------------------------------------------
    async def request_body(self, scope, receive) -> bytes | bytearray:
        return await read_limited(scope, receive, self.body_limit)

    async def _refuse_early(self, body, kind: str) -> None:
        refusal = await early_refusal(body, kind, self._pipeline_of)
        if refusal is not None:
            raise refusal

    def _pipeline_of(self, name: str):
        entry = self.models.get(name)
        return entry.pipeline if entry is not None else None

    async def chat(self, scope, receive, send) -> None:
        await self._handle(scope, receive, send, "chat")

    async def completions(self, scope, receive, send) -> None:
        await self._handle(scope, receive, send, "completion")

    async def _handle(self, scope, receive, send, kind: str) -> None:
        self.admission.refuse_if_draining()
        body = await self.request_body(scope, receive)
        size = len(body)
        try:
            await self._refuse_early(body, kind)
            if size >= SHAPE_CHECK_BYTES:  # megabytes decoded next: let other streams' tokens out first
                await asyncio.sleep(0)
            req = decode_request(body, kind)  # type: ignore[arg-type]
            del body
            await self.generate(req, "chat_completions" if kind == "chat" else "completions", size, receive, send,
                                trace=scope.get(SCOPE_KEY), prepare=partial(self._prepare, req, kind, scope))
        finally:
            if size >= TRIM_AFTER_BYTES:
                self.trimmer.schedule()

    @staticmethod
    def _prepare(req, kind: str, scope: dict) -> tuple[object, RoutingHints, bool]:
        """A chat or completion request's own checks; it, its routing hints and whether its next turn is prefilled."""
        (validate_chat if kind == "chat" else validate_completion)(req)
        hints = routing_hints(req.nvext, scope["headers"], req.cache_salt, scope.get(inprocess.BACKGROUND, False))
        # a continued prefill's next turn does not start with this answer as its own message
        return req, hints, kind == "chat" and speculative_prefill.wanted(req.nvext) and not req.continue_final_message

    async def pooled(self, route: PoolingRoute, scope, receive, send) -> None:
        """/v1/embeddings, /v1/classify, /v1/pooling, /v1/rerank: one unary answer from the model's pooling
        workers."""
        self.admission.refuse_if_draining()
        req = route.decode(await self.request_body(scope, receive))
        trace = scope.get(SCOPE_KEY)
        with self._tally(req.model, route.endpoint, "unary", trace) as tally:
            req.validate()
            if trace is not None:
                trace.received(req.model, route.endpoint, "unary")
            entry = await self.admission.served_entry(req.model, receive)
            card = entry.card.mdcsum  # its inputs are tokenized by this card's pipeline: only its workers take them
            if not route.served_by(entry.card.model_type):
                raise route.not_served(req.model)
            self.admission.refuse_if_overloaded(entry.name)
            started = time.monotonic()
            self.admission.admit(entry.name)
            try:
                streams = PooledStreams(self.dispatcher, card, bool(scope.get(inprocess.BACKGROUND)))
                body = await route.answer(streams, entry, req)
            finally:
                self.admission.release(entry.name)
                self.metrics.duration.labels(entry.name).observe(time.monotonic() - started)
            await send_json(send, 200, body)
            tally.ended(RequestOutcome.SUCCESS)

    async def generate(self, req, endpoint: str, body_size: int, receive, send, run_cls=GenerationRun,
                       hints: RoutingHints | None = None, trace: RequestTrace | None = None, speculate: bool = False,
                       prepare: Callable[[], tuple] | None = None, fit: ConversationFit | None = None,
                       **run_kw) -> None:
        """Serve a decoded request, counted once in the request metrics however it ends. `prepare`: the route's
        conversion and checks, made once it counts (a refusal is one), giving the request run, `hints`, `speculate`;
        `fit`: what shortens a chat over the context (Responses' `truncation: auto`)."""
        request_type = "stream" if req.stream else "unary"
        arrival = self.demand.arrived(req.model, endpoint, request_type)  # counts a known model's start
        try:
            with self._tally(req.model, endpoint, request_type, trace, count_started=False) as tally:
                if prepare is not None:
                    req, hints, speculate = prepare()
                if trace is not None:
                    trace.received(req.model, endpoint, request_type, hints.session_id if hints else None,
                                   hints.parent_session_id if hints else None, agent_context(req.nvext))
                inputs = RunInputs(req, endpoint, body_size, receive, send, run_cls, hints, trace, speculate, arrival,
                                   fit, time.monotonic(), run_kw)
                tally.ended(*await self.path.serve(inputs))
        finally:
            arrival.close()

    def _tally(self, model: str, endpoint: str, request_type: str, trace: RequestTrace | None,
               count_started: bool = True) -> RequestTally:
        if trace is not None:
            trace.tallied = True
        return self.metrics.tally(model, endpoint, request_type, self.models.knows(model), count_started)

    async def prompt_tokens(self, req: ChatCompletionRequest, body_size: int,
                            fit: ConversationFit | None = None) -> int:
        """The chat's prompt length as its model will see it (template and tools included; shortened by `fit`
        where it would be): the Responses and Anthropic token-count routes."""
        validate_chat(req)
        # a model scaled to zero still has its tokenizer: counting needs no worker
        entry = ((self.models.retired.get(req.model) if self.admission.worker_wait.enabled else None)
                 or self.admission.entry_for(req.model))
        def tokenize(chat: ChatCompletionRequest):
            return tokenized_prompt(entry.pipeline, chat, None, body_size, frozenset(), self.prep_pool)

        if fit is not None:
            _, (ids, _) = await fit(tokenize, entry.pipeline.context_length, req)
        else:
            ids, _ = await tokenize(req)
        return len(ids)

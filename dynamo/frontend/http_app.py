"""The OpenAI-compatible HTTP surface as a raw ASGI app (no framework on the
per-token path). Routes: POST /v1/chat/completions, /v1/completions, /v1/responses,
/v1/embeddings; GET /v1/models, /health, /live, /metrics.

Requests are read, decoded, validated and converted here; the generation itself (fan-out,
output stage, framing) is `generation.GenerationRun`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from prometheus_client import generate_latest

from dynamo.frontend import errors
from dynamo.frontend.intake import early_refusal
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.embeddings import decode_embeddings, embed
from dynamo.frontend.errors import OVERLOADED_STATUS, ApiError, bad_request
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.metrics import FrontendMetrics, RequestOutcome
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.routing_hints import routing_hints
from dynamo.llm.protocol import RoutingHints
from dynamo.frontend.openai import (
    ChatCompletionRequest,
    decode_request,
    stop_list,
    validate_chat,
    validate_completion,
)
from dynamo.frontend.output import OutputSpec
from dynamo.frontend.responses import ResponsesRun, decode_responses
from dynamo.llm.preprocessor import PreprocessError
from dynamo.runtime.memory import trim_heap
from dynamo.runtime.asgi import (
    JSON_HEADERS,
    TEXT_HEADERS,
    BodyTooLarge,
    header,
    json_encode,
    read_body,
    send_bytes,
    send_json,
)

log = logging.getLogger(__name__)

# Bodies up to this size are templated and tokenized inline (well under a millisecond);
# bigger ones on `prep_pool`, so that no request's size shows in another's latency.
PREP_INLINE_BYTES = 8192
PREP_THREADS = 2
TRIM_AFTER_BYTES = 1 << 20
CLOSE_HEADERS = [*JSON_HEADERS, (b"connection", b"close")]


class FrontendApp:
    def __init__(self, models: ModelManager, dispatcher: Dispatcher, metrics: FrontendMetrics, *,
                 body_limit: int, concurrency_limit: int = 0, overload_status: int = OVERLOADED_STATUS,
                 health_extra: Callable[[], dict] | None = None,
                 reasoning_field: str = "reasoning_content") -> None:
        self.models = models
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.body_limit = body_limit
        self.concurrency_limit = concurrency_limit
        self.overload_status = overload_status
        self.health_extra = health_extra
        self.reasoning_field = reasoning_field
        self.inflight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.prep_pool = ThreadPoolExecutor(max_workers=PREP_THREADS, thread_name_prefix="dyn-prep")
        self._trim_pending = False
        self.routes: dict[tuple[str, str], Callable] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/responses"): self.responses,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.list_models,
            ("GET", "/health"): self.health,
            ("GET", "/live"): self.live,
            ("GET", "/metrics"): self.prometheus,
        }

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        route = self.routes.get((scope["method"], scope["path"]))
        try:
            if route is None:
                raise self._no_route(scope)
            await route(scope, receive, send)
        except ApiError as exc:
            # The traceback's frames hold the request body (up to the body limit) in a cycle that
            # only a full GC would free: drop them now.
            exc.__traceback__ = None
            if exc.status == 413:
                # The rest of the body is unread: close instead of reading and discarding it.
                await send_bytes(send, 413, json_encode(exc.body()), CLOSE_HEADERS)
            else:
                await send_json(send, exc.status, exc.body())
        except ConnectionError:
            pass

    def _no_route(self, scope: dict) -> ApiError:
        known = {path for _, path in self.routes}
        if scope["path"] in known:
            return errors.method_not_allowed(scope["method"], scope["path"])
        return errors.no_route(scope["path"])

    # -- shutdown ------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """From now on /health says 503 and new generation requests get 503; admitted ones run on."""
        self.draining = True

    async def drained(self, timeout: float) -> bool:
        """Wait (bounded) until no generation request is in flight."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.prep_pool.shutdown(wait=False, cancel_futures=True)

    # -- simple routes ---------------------------------------------------------------------------
    async def live(self, scope, receive, send) -> None:
        await send_json(send, 200, {"status": "live", "message": "Service is live"})

    async def health(self, scope, receive, send) -> None:
        listed = self.models.listed()
        instances = [
            {"namespace": w.endpoint.namespace, "component": w.endpoint.component, "endpoint": w.endpoint.endpoint,
             "instance_id": w.instance_id, "transport": {"tcp": w.address}, "model": entry.name,
             "worker_type": w.card.worker_type}
            for entry in listed for w in entry.serving()
        ]
        body: dict[str, Any] = {
            "status": "healthy" if listed else "unhealthy",
            "message": f"{len(listed)} model(s) with serving workers" if listed else "no model has a worker",
            "endpoints": sorted({str(w.endpoint) for entry in listed for w in entry.serving()}),
            "instances": instances,
        }
        if self.health_extra is not None:
            body.update(self.health_extra())
        if self.draining:
            body.update(status="draining", message="shutting down: not accepting new requests")
            await send_json(send, 503, body)
            return
        # 200 either way: Kubernetes liveness must not restart a frontend whose workers are down.
        await send_json(send, 200, body)

    async def list_models(self, scope, receive, send) -> None:
        data = [{"id": e.name, "object": "model", "created": e.created, "owned_by": "dynamo",
                 **({"parent": e.card.base_model_path} if e.card.lora_name else {})}  # a LoRA: its base model
                for e in self.models.listed()]
        await send_json(send, 200, {"object": "list", "data": data})

    async def prometheus(self, scope, receive, send) -> None:
        for entry in self.models.models.values():
            m = self.metrics
            m.model_series(entry.name)
            m.workers.labels(entry.name).set(len(entry.decode_workers()))
            m.context_length.labels(entry.name).set(entry.card.context_length)
            m.block_size.labels(entry.name).set(entry.card.kv_cache_block_size)
            m.migration_limit.labels(entry.name).set(self.dispatcher.migration_limit)
            m.total_kv_blocks.labels(entry.name).set(
                sum(w.card.runtime_config.total_kv_blocks or 0 for w in entry.decode_workers()))
        await send_bytes(send, 200, generate_latest(self.metrics.registry), TEXT_HEADERS)

    # -- generation ---------------------------------------------------------------------------
    async def _body(self, scope, receive) -> bytes | bytearray:
        length = header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise bad_request("invalid Content-Length header", None, "invalid_header") from None
            if declared > self.body_limit:
                raise self._too_large(declared)
        try:
            return await read_body(receive, self.body_limit)
        except BodyTooLarge:
            raise self._too_large(None) from None

    def _too_large(self, size: int | None) -> ApiError:
        return errors.body_too_large(self.body_limit, size)

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise errors.shutting_down()

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
        self._refuse_if_draining()
        body = await self._body(scope, receive)
        size = len(body)
        try:
            await self._refuse_early(body, kind)
            req = decode_request(body, kind)  # type: ignore[arg-type]
            del body
            (validate_chat if kind == "chat" else validate_completion)(req)
            hints = routing_hints(req.nvext, scope["headers"])
            await self._generate(req, "chat_completions" if kind == "chat" else "completions", size, receive, send,
                                 hints=hints)
        finally:
            if size >= TRIM_AFTER_BYTES:
                self._schedule_trim()

    def _schedule_trim(self) -> None:
        """After big bodies, return the freed heap to the OS (at most once a second, off the loop)."""
        if self._trim_pending:
            return
        self._trim_pending = True

        def run() -> None:
            self._trim_pending = False
            self.prep_pool.submit(trim_heap)

        asyncio.get_running_loop().call_later(1.0, run)

    async def _prompt_ids(self, pipeline, req, body_size: int) -> list[int]:
        if body_size <= PREP_INLINE_BYTES or is_token_prompt(req):
            return prompt_ids(pipeline, req)
        return await asyncio.get_running_loop().run_in_executor(self.prep_pool, prompt_ids, pipeline, req)

    async def responses(self, scope, receive, send) -> None:
        self._refuse_if_draining()
        body = await self._body(scope, receive)
        rreq = decode_responses(body)
        req = rreq.to_chat()
        validate_chat(req)
        await self._generate(req, "responses", len(body), receive, send, ResponsesRun,
                             hints=routing_hints(req.nvext, scope["headers"]), responses_req=rreq)

    async def embeddings(self, scope, receive, send) -> None:
        self._refuse_if_draining()
        req = decode_embeddings(await self._body(scope, receive))
        req.validate()
        entry = self._entry(req.model)
        if "embedding" not in entry.card.model_type:
            raise errors.no_embeddings(req.model)
        self._refuse_if_overloaded(entry.name)
        started = time.monotonic()
        status = RequestOutcome.ERROR
        self._admit(entry.name)
        try:
            body = await embed(self.dispatcher, entry, req)
            status = RequestOutcome.SUCCESS
        finally:
            self._release(entry.name, "embeddings", "unary", status)
            self.metrics.duration.labels(entry.name).observe(time.monotonic() - started)
        await send_json(send, 200, body)

    def _entry(self, name: str):
        entry = self.models.get(name)
        if entry is None and name not in self.models.retired:
            raise errors.model_not_found(name)
        if entry is None or not entry.decode_workers():
            raise self._rejected(name, errors.no_workers(name))
        return entry

    def _refuse_if_overloaded(self, model: str) -> None:
        if self.concurrency_limit and self.inflight >= self.concurrency_limit:
            raise self._rejected(model, errors.too_many_requests(self.overload_status))

    def _rejected(self, model: str, error: ApiError) -> ApiError:
        """`error`, counted in the rejection metric under its code (`no_workers`, `overloaded`)."""
        self.metrics.rejections.labels(model, error.code).inc()
        return error

    async def _generate(self, req, endpoint: str, body_size: int, receive, send, run_cls=GenerationRun,
                        hints: RoutingHints | None = None, **run_kw) -> None:
        started = time.monotonic()
        entry = self._entry(req.model)
        self._refuse_if_overloaded(entry.name)
        is_chat = isinstance(req, ChatCompletionRequest)
        kind = "chat" if is_chat else "completions"
        if kind not in entry.card.model_type:
            raise bad_request(f"model {entry.name!r} does not serve {kind}", "model", "unsupported_model")
        try:
            ids = await self._prompt_ids(entry.pipeline, req, body_size)
        except PreprocessError as exc:
            raise bad_request(exc.message, exc.param, exc.code) from None
        preqs = wire_requests(entry.pipeline, req, ids, is_chat, hints)
        self._refuse_if_overloaded(entry.name)
        self._refuse_if_draining()
        request_type = "stream" if req.stream else "unary"
        self._admit(entry.name)
        status = RequestOutcome.ERROR
        try:
            run = run_cls(self, entry, req, preqs, is_chat, started, output_spec(entry, req, is_chat),
                          self.reasoning_field, **run_kw)
            status = await run.execute(entry, receive, send, request_type)
        finally:
            self._release(entry.name, endpoint, request_type, status)

    def _admit(self, model: str) -> None:
        self.inflight += 1
        self._idle.clear()
        self.metrics.inflight.labels(model).inc()

    def _release(self, model: str, endpoint: str, request_type: str, status: RequestOutcome) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
        self.metrics.inflight.labels(model).dec()
        self.metrics.requests.labels(model, endpoint, request_type, status).inc()


def is_token_prompt(req) -> bool:
    """A completion given token ids: nothing to template or tokenize, only C-level checks that take
    about a millisecond for 5,000 tokens, so it runs inline; a hop through the prep pool would add
    a thread wake-up and GIL hand-offs to its TTFT on a busy frontend."""
    if isinstance(req, ChatCompletionRequest):
        return False
    prompt = req.prompt_input()
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], str)


def prompt_ids(pipeline, req) -> list[int]:
    """Template + tokenize (may run on the prep pool); PreprocessError on a bad prompt."""
    if isinstance(req, ChatCompletionRequest):
        return pipeline.chat_prompt_ids(req.message_dicts(), req.template_tools(), req.chat_template_kwargs)
    return pipeline.completion_prompt_ids(req.prompt_input())


def wire_requests(pipeline, req, ids: list[int], is_chat: bool, hints: RoutingHints | None = None) -> list:
    """One wire request per choice (`n`), each with its own seed so the choices are
    independent samples, each with the client's routing hints."""
    try:
        max_tokens = pipeline.max_tokens_for(ids, req.requested_max_tokens(), req.prompt_param)
    except PreprocessError as exc:
        raise bad_request(exc.message, exc.param, exc.code) from None
    request_id = ("chatcmpl-" if is_chat else "cmpl-") + uuid.uuid4().hex
    parser = pipeline.card.runtime_config.tool_call_parser
    n = req.choices()
    if n == 1:
        out = [req.to_request(ids, request_id, pipeline.name, max_tokens, pipeline.eos_token_ids, parser)]
    else:
        base = req.seed if req.seed is not None else random.getrandbits(31)
        out = []
        for i in range(n):
            preq = req.to_request(list(ids), f"{request_id}-{i}", pipeline.name, max_tokens,
                                  pipeline.eos_token_ids, parser)
            preq.sampling_options.seed = base + i
            out.append(preq)
    for preq in out:  # a LoRA adapter's model: the worker applies it, its KV blocks hash in its namespace
        preq.lora_name = pipeline.card.lora_name
        preq.routing = hints
    return out


def output_spec(entry, req, is_chat: bool) -> OutputSpec:
    """What the output stage runs for this request: parsers from the worker's card."""
    stops = stop_list(req.stop)
    if not is_chat:
        return OutputSpec(stops)
    rc = entry.card.runtime_config
    return OutputSpec(stops, tool_parser=rc.tool_call_parser, reasoning_parser=rc.reasoning_parser, tools=req.tools,
                      tool_mode=req.tool_choice_mode(), named_tool=req.named_tool(),
                      parallel_tool_calls=req.parallel_tool_calls is not False)

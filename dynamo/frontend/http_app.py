"""The OpenAI-compatible HTTP surface as a raw ASGI app (no framework on the
per-token path). Routes: POST /v1/chat/completions, /v1/completions; GET /v1/models,
/health, /live, /metrics.

The response status is decided after the first batch of tokens arrives, so failures
before any output (no worker, overload, bad prompt) get a real HTTP error instead
of a 200 with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Callable

from prometheus_client import generate_latest

from dynamo.frontend.dispatch import Dispatcher, RequestHandle, aclose_quietly
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.openai import (
    ApiError,
    ChatCompletionRequest,
    bad_request,
    decode_request,
    stop_list,
    validate_chat,
    validate_completion,
)
from dynamo.frontend.sse import (
    DONE,
    ChatChunks,
    CompletionChunks,
    chat_response,
    completion_response,
    error_event,
    openai_finish_reason,
    usage_dict,
)
from dynamo.runtime.asgi import TEXT_HEADERS, BodyTooLarge, header, read_body, send_bytes, send_json

log = logging.getLogger(__name__)

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class FrontendApp:
    def __init__(self, models: ModelManager, dispatcher: Dispatcher, metrics: FrontendMetrics, *,
                 body_limit: int, concurrency_limit: int = 0, overload_status: int = 529,
                 health_extra: Callable[[], dict] | None = None) -> None:
        self.models = models
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.body_limit = body_limit
        self.concurrency_limit = concurrency_limit
        self.overload_status = overload_status
        self.health_extra = health_extra
        self.inflight = 0
        self.routes: dict[tuple[str, str], Callable] = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
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
            await send_json(send, exc.status, exc.body())
        except ConnectionError:
            pass

    def _no_route(self, scope: dict) -> ApiError:
        known = {path for _, path in self.routes}
        if scope["path"] in known:
            return ApiError(405, f"method {scope['method']} not allowed on {scope['path']}",
                            "invalid_request_error", None, "method_not_allowed")
        return ApiError(404, f"no route {scope['path']}", "not_found_error", None, "not_found")

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
            m.workers.labels(entry.name).set(len(entry.decode_workers()))
            m.context_length.labels(entry.name).set(entry.card.context_length)
            m.block_size.labels(entry.name).set(entry.card.kv_cache_block_size)
            m.migration_limit.labels(entry.name).set(self.dispatcher.migration_limit)
            m.total_kv_blocks.labels(entry.name).set(
                sum(w.card.runtime_config.total_kv_blocks or 0 for w in entry.decode_workers()))
        await send_bytes(send, 200, generate_latest(self.metrics.registry), TEXT_HEADERS)

    # -- generation ---------------------------------------------------------------------------
    async def _body(self, scope, receive) -> bytes:
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
        got = f" ({size} bytes)" if size is not None else ""
        return ApiError(413, f"request body{got} exceeds the limit of {self.body_limit} bytes",
                        "invalid_request_error", None, "request_too_large")

    async def chat(self, scope, receive, send) -> None:
        body = await self._body(scope, receive)
        req = decode_request(body, "chat")
        validate_chat(req)
        await self._generate(req, "chat_completions", receive, send)

    async def completions(self, scope, receive, send) -> None:
        body = await self._body(scope, receive)
        req = decode_request(body, "completion")
        validate_completion(req)
        await self._generate(req, "completions", receive, send)

    def _entry(self, name: str):
        entry = self.models.get(name)
        if entry is None and name in self.models.retired:
            self.metrics.rejections.labels(name, "no_workers").inc()
            raise ApiError(503, f"No workers are available for model {name!r}; retry later",
                           "service_unavailable", None, "no_workers")
        if entry is None:
            raise ApiError(404, f"The model `{name}` does not exist.", "invalid_request_error", "model",
                           "model_not_found")
        if not entry.decode_workers():
            self.metrics.rejections.labels(name, "no_workers").inc()
            raise ApiError(503, f"No workers are available for model {name!r}; retry later",
                           "service_unavailable", None, "no_workers")
        return entry

    async def _generate(self, req, endpoint: str, receive, send) -> None:
        started = time.monotonic()
        entry = self._entry(req.model)
        pipeline = entry.pipeline
        is_chat = isinstance(req, ChatCompletionRequest)
        ids = pipeline.chat_prompt_ids(req) if is_chat else pipeline.completion_prompt_ids(req)
        prefix = "chatcmpl-" if is_chat else "cmpl-"
        request_id = prefix + uuid.uuid4().hex
        preq = pipeline.build_request(req, ids, request_id)
        if self.concurrency_limit and self.inflight >= self.concurrency_limit:
            self.metrics.rejections.labels(entry.name, "overloaded").inc()
            raise ApiError(self.overload_status, "Too many requests in flight; retry later", "overloaded_error",
                           None, "overloaded")
        request_type = "stream" if req.stream else "unary"
        self.inflight += 1
        self.metrics.inflight.labels(entry.name).inc()
        status = "error"
        try:
            run = _Run(self, entry, req, preq, is_chat, started)
            status = await run.execute(entry, receive, send, request_type)
        finally:
            self.inflight -= 1
            self.metrics.inflight.labels(entry.name).dec()
            self.metrics.requests.labels(entry.name, endpoint, request_type, status).inc()


class _Run:
    """One generation request from its first worker call to its last byte."""

    def __init__(self, app: FrontendApp, entry, req, preq, is_chat: bool, started: float) -> None:
        self.app = app
        self.model = model = entry.name
        self.req = req
        self.preq = preq
        self.started = started
        self.created = int(time.time())
        self.chunks = (ChatChunks if is_chat else CompletionChunks)(preq.request_id, model, self.created)
        self.is_chat = is_chat
        self.assembler = entry.pipeline.assembler(stop_list(req.stop))
        self.handle = RequestHandle()
        self.cached_tokens = 0
        self.finish: str | None = None
        self.last_time = started
        self._observe_itl = app.metrics.itl.labels(model).observe

    async def execute(self, entry, receive, send, request_type: str) -> str:
        app = self.app
        gen = app.dispatcher.stream(entry, self.preq, self.handle)
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(self._on_receive)
        try:
            try:
                first = await gen.__anext__()
            except StopAsyncIteration:
                first = []
            if self.handle.cancelled:
                return "cancelled"
            app.metrics.ttft.labels(self.model).observe(time.monotonic() - self.started)
            self.last_time = time.monotonic()
            if self.req.stream:
                await self._stream(gen, first, send)
            else:
                await self._unary(gen, first, send)
            return "cancelled" if self.handle.cancelled else "success"
        finally:
            watcher.remove_done_callback(self._on_receive)
            watcher.cancel()
            await aclose_quietly(gen)
            self._observe_end()

    def _on_receive(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None or task.result().get("type") == "http.disconnect":
            self.app.metrics.disconnects.inc()
            self.app.metrics.cancellations.labels(self.model, "stream" if self.req.stream else "unary").inc()
            self.handle.cancel()

    def _observe_end(self) -> None:
        m = self.app.metrics
        m.duration.labels(self.model).observe(time.monotonic() - self.started)
        m.isl.labels(self.model).observe(len(self.preq.token_ids))
        m.osl.labels(self.model).observe(self.assembler.completion_tokens)
        m.cached.labels(self.model).observe(self.cached_tokens)

    def _absorb(self, outputs) -> str:
        """Fold a batch of engine outputs into visible text; sets `finish` when done."""
        text = ""
        assembler = self.assembler
        for out in outputs:
            if out.cached_tokens is not None:
                self.cached_tokens = out.cached_tokens
            if out.error is not None:
                raise ApiError(500, f"engine error: {out.error}", "internal_error", None, "engine_error")
            if out.token_ids:
                text += assembler.add(out.token_ids)
            if assembler.stopped:
                self.finish = "stop"
                self.handle.stop_worker()
                break
            if out.finish_reason is not None:
                self.finish = openai_finish_reason(out.finish_reason)
        now = time.monotonic()
        count = sum(len(out.token_ids) for out in outputs)
        if count:
            gap = (now - self.last_time) / count
            observe = self._observe_itl
            for _ in range(count):
                observe(gap)
        self.last_time = now
        return text

    def _usage(self) -> dict:
        return usage_dict(len(self.preq.token_ids), self.assembler.completion_tokens, self.cached_tokens)

    async def _batches(self, gen, first):
        if first:
            yield first
        if self.finish is not None:
            return
        async for outputs in gen:
            yield outputs

    async def _stream(self, gen, first, send) -> None:
        chunks = self.chunks
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        sent_first = False
        try:
            async for outputs in self._batches(gen, first):
                text = self._absorb(outputs)
                if text:
                    await send({"type": "http.response.body", "body": chunks.content(text, not sent_first),
                                "more_body": True})
                    sent_first = True
                if self.finish is not None:
                    break
            tail = self.assembler.finish()
            body = chunks.content(tail, not sent_first) if tail else b""
            sent_first = sent_first or bool(tail)
            body += chunks.finish(self.finish or "stop", not sent_first)
            if self.req.stream_options is not None and self.req.stream_options.include_usage:
                body += chunks.usage(self._usage())
            await send({"type": "http.response.body", "body": body + DONE, "more_body": False})
        except ApiError as exc:
            if self.handle.cancelled:
                return
            await send({"type": "http.response.body", "body": error_event(exc.body()) + DONE, "more_body": False})

    async def _unary(self, gen, first, send) -> None:
        parts = []
        async for outputs in self._batches(gen, first):
            parts.append(self._absorb(outputs))
            if self.finish is not None:
                break
        if self.handle.cancelled and self.finish is None:
            return
        parts.append(self.assembler.finish())
        text = "".join(parts)
        build = chat_response if self.is_chat else completion_response
        body = build(self.preq.request_id, self.model, self.created, text, self.finish or "stop", self._usage())
        await send_bytes(send, 200, body)

"""SGLang as an engine adapter: the in-process `sgl.Engine` behind the worker harness.

Requests: `Engine.async_generate(input_ids=..., sampling_params=..., stream=True, rid=...)`;
abort: `Engine.tokenizer_manager.abort_request(rid=...)`. KV events: SGLang's ZMQ
publisher (turned on here with a free port unless `--kv-events-config` is given; one
port per DP-attention rank, base + rank), relayed by the harness.

Disaggregation follows SGLang's bootstrap protocol. A prefill worker answers at once
with `{bootstrap_host, bootstrap_port, bootstrap_room}` (its host, its
`--disaggregation-bootstrap-port`, a fresh random room) and runs the prefill in the
background, where SGLang waits for the decode worker to fetch the KV (NIXL or Mooncake,
`--disaggregation-transfer-backend`). The decode worker passes the triple to its own
`async_generate`. Background prefills are owned, bounded by
`--prefill-bootstrap-timeout`, and aborted on stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
from typing import Any, AsyncIterator, Callable

from dynamo.llm.media import image_urls_of
from dynamo.llm.model_card import MEDIA_INPUT_KEY, STRUCTURED_OUTPUT_KEY
from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest, engine_priority
from dynamo.llm.kv_events.engine_decoder import EngineEventDecoder
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.runtime.net import free_port
from dynamo.runtime.wire import ErrorCode
from dynamo.sglang.args import DynamoSglangArgs, role_of
from dynamo.sglang.metrics import ENGINE_METRIC_PREFIXES, SglangSeries
from dynamo.sglang.request import bootstrap_of, sampling_params, to_output
from dynamo.worker.adapter import EngineContext, EngineInfo, EngineMetrics, Gauges
from dynamo.worker.kv_relay import ZmqKvEventSource
from dynamo.worker.media_loader import ImageLoader
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)

KV_EVENTS_TOPIC = "kv-events"


def build_engine(server_args: Any) -> Any:
    import sglang as sgl

    return sgl.Engine(server_args=server_args)


class SglangAdapter:
    name = "sglang"

    def __init__(self, config: DynamoSglangArgs, server_args: Any,
                 engine_factory: Callable[[Any], Any] = build_engine) -> None:
        self.config = config
        self.server_args = server_args
        self.engine_factory = engine_factory
        self.role = role_of(server_args)
        self.engine: Any = None
        self.context_length = 0
        self.total_blocks = 0
        self.active = 0
        self.bootstrap_host = "127.0.0.1"
        self.instance_id = 0
        self._prefills: set[asyncio.Task] = set()
        self._dead = False
        # SGLang's --enable-multimodal on an aggregated worker: the requests' images, loaded here.
        self.images = ImageLoader(config.media_policy()) \
            if getattr(server_args, "enable_multimodal", False) and self.role is WorkerRole.AGG else None

    # ---- start-up ------------------------------------------------------------------

    def _prepare(self) -> bool:
        """Dynamo's settings on the server args; True when SGLang will publish KV events."""
        sa = self.server_args
        sa.skip_tokenizer_init = True  # token ids in and out: the frontend owns the tokenizer
        sa.incremental_streaming_output = True  # each streamed chunk is a delta
        if sa.kv_events_config:
            return json.loads(sa.kv_events_config).get("publisher") == "zmq"
        if not self.config.publish_kv_events:
            return False
        sa.kv_events_config = json.dumps({"publisher": "zmq", "topic": KV_EVENTS_TOPIC,
                                          "endpoint": f"tcp://*:{free_port(count=self._dp_ranks())}"})
        return True

    def _dp_ranks(self) -> int:
        sa = self.server_args
        return int(getattr(sa, "dp_size", 1) or 1) if getattr(sa, "enable_dp_attention", False) else 1

    async def start(self, ctx: EngineContext) -> EngineInfo:
        self.instance_id, self.bootstrap_host = ctx.instance_id, ctx.advertise_host
        self.publishes = self._prepare()
        # SGLang's children SIGQUIT their parent when they fail; SGLang handles that only when
        # built on the main thread, so the harness's engine-death path takes it here.
        asyncio.get_running_loop().add_signal_handler(signal.SIGQUIT, self._on_child_failed)
        # Built off the event loop: loading takes minutes and /health and the lease must keep going.
        # SGLang supports this (it installs its SIGTERM handler only on the main thread).
        self.engine = await asyncio.to_thread(self.engine_factory, self.server_args)
        sa = self.engine.tokenizer_manager.server_args
        self.context_length = int(getattr(sa, "context_length", None)
                                  or self.engine.tokenizer_manager.model_config.context_len)
        page = int(getattr(sa, "page_size", None) or 1)
        self.total_blocks = self._max_total_tokens() // page
        disagg = None
        if self.role is WorkerRole.PREFILL:
            disagg = {"bootstrap_host": self.bootstrap_host, "bootstrap_port": sa.disaggregation_bootstrap_port}
        model = sa.model_path
        return EngineInfo(
            model_dir=getattr(sa, "tokenizer_path", None) or model,
            served_name=getattr(sa, "served_model_name", None) or model, block_size=page,
            context_length=self.context_length, total_kv_blocks=self.total_blocks or None,
            data_parallel_size=int(getattr(sa, "dp_size", 1) or 1), publishes_kv_events=self.publishes,
            disaggregated_endpoint=disagg, engine_metrics=self._engine_metrics(sa),
            runtime_data={**({"disaggregation_transfer_backend": getattr(sa, "disaggregation_transfer_backend", None)}
                             if self.role is not WorkerRole.AGG else ({MEDIA_INPUT_KEY: ["image"]} if self.images else {})),
                          # SGLang holds output to json_schema / regex / ebnf unless its grammar backend is off
                          STRUCTURED_OUTPUT_KEY: getattr(sa, "grammar_backend", None) != "none"},
            summary=f"{model}, page size {page}, context {self.context_length}, {self.total_blocks} KV pages")

    @staticmethod
    def _engine_metrics(sa: Any) -> EngineMetrics | None:
        """SGLang's `sglang:*` series on the worker's /metrics, with --enable-metrics (read once the
        engine is up: it sets where its scheduler processes write them)."""
        if not getattr(sa, "enable_metrics", False):
            return None
        series = SglangSeries.of_engine()
        return EngineMetrics(ENGINE_METRIC_PREFIXES, lambda: series)

    def _max_total_tokens(self) -> int:
        info = getattr(self.engine, "scheduler_info", None)  # older SGLang
        if info is None:
            result = getattr(self.engine, "_scheduler_init_result", None)
            infos = getattr(result, "scheduler_infos", None) or [{}]
            info = infos[0]
        return int((info or {}).get("max_total_num_tokens") or 0)

    # ---- requests ------------------------------------------------------------------

    def generate(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        if self.role is WorkerRole.PREFILL or request.prefill_only:
            return self._prefill(request, request_id)
        return self._decode(request, request_id)

    def _call(self, request: PreprocessedRequest, request_id: str, prefill_only: bool) -> dict[str, Any]:
        if request.routing is not None and request.routing.cache_salt:
            # Refused, not ignored: a tenant asking for its own namespace must not share another's cache.
            raise ValueError("cache_salt is not supported by this worker: SGLang's engine API takes no "
                             "per-request KV-cache namespace")
        if request.multi_modal_data and self.images is None:  # refused, not answered without the images
            raise ValueError("this worker reads no images (aggregated SGLang workers read them when started with "
                             "--enable-multimodal)")
        if request.stop_conditions.max_thinking_tokens is not None:  # refused, not silently unbounded
            raise ValueError("max_thinking_tokens is not supported by this worker: SGLang's engine API takes no "
                             "per-request reasoning budget")
        call = {"input_ids": list(request.token_ids), "stream": True, "rid": request_id,
                "sampling_params": sampling_params(request, self.context_length, prefill_only)}
        sa = self.server_args
        # Only under priority scheduling: otherwise SGLang may abort a request that carries one
        # (`--abort-on-priority-when-disabled`).
        hints = request.routing
        if hints is not None and (hints.priority is not None or hints.strict_priority is not None) \
                and getattr(sa, "enable_priority_scheduling", False):
            lower_first = bool(getattr(sa, "schedule_low_priority_values_first", False))
            call["priority"] = engine_priority(hints, lower_first)
        return call

    async def _decode(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        kwargs = self._call(request, request_id, False)
        bootstrap = bootstrap_of(request.disaggregated_params)
        if self.role is WorkerRole.DECODE and not bootstrap:  # SGLang's decode mode cannot prefill locally
            raise RuntimeError("SGLang decode worker got a request without bootstrap info (no prefill worker "
                               "answered); run prefill workers or an aggregated worker for local prefill")
        kwargs.update(bootstrap)
        if request.multi_modal_data:  # decoded here (the DYN_MM_* policy), handed over as PIL images
            kwargs["image_data"] = await self.images.load(image_urls_of(request.multi_modal_data))
        eos_ids = set(request.eos_token_ids)
        self.active += 1
        try:
            stream = await self.engine.async_generate(**kwargs)
            first = True
            async for res in stream:
                out = to_output(res, first, eos_ids)
                first = False
                if out.token_ids or out.finish_reason is not None:
                    yield out
                if out.finish_reason is not None:
                    return
        finally:
            self.active -= 1

    async def _prefill(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        """Answer with the bootstrap triple now; SGLang prefills (and hands the KV over) in the background."""
        if self.role is not WorkerRole.PREFILL:
            raise ValueError("prefill-only request sent to a worker not started with --disaggregation-mode prefill")
        room = random.getrandbits(63)
        bootstrap = {"bootstrap_host": self.bootstrap_host,
                     "bootstrap_port": self.engine.tokenizer_manager.server_args.disaggregation_bootstrap_port,
                     "bootstrap_room": room}
        kwargs = {**self._call(request, request_id, True), **bootstrap}
        task = asyncio.get_running_loop().create_task(self._run_prefill(kwargs, request_id),
                                                      name=f"sglang-prefill-{request_id}")
        self._prefills.add(task)
        task.add_done_callback(self._prefills.discard)
        yield LLMEngineOutput(finish_reason=FinishReason.LENGTH, cached_tokens=0,
                              disaggregated_params={**bootstrap, "transfer": "sglang-bootstrap"})

    async def _run_prefill(self, kwargs: dict[str, Any], request_id: str) -> None:
        self.active += 1
        try:
            await asyncio.wait_for(self._consume(kwargs), self.config.prefill_bootstrap_timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            log.warning("prefill %s: %s; aborting it", request_id, "stopped" if isinstance(
                exc, asyncio.CancelledError) else "no decode worker fetched the KV in time")
            await self.abort(request_id)
        except Exception as exc:
            log.warning("prefill %s failed: %s", request_id, exc)
        finally:
            self.active -= 1

    async def _consume(self, kwargs: dict[str, Any]) -> None:
        stream = await self.engine.async_generate(**kwargs)
        async for res in stream:
            if (res.get("meta_info") or {}).get("finish_reason"):
                return

    async def abort(self, request_id: str) -> None:
        self.engine.tokenizer_manager.abort_request(rid=request_id)

    # ---- events, load, health ------------------------------------------------------

    def kv_event_source(self) -> ZmqKvEventSource | None:
        if not self.publishes:
            return None
        cfg = json.loads(self.server_args.kv_events_config)
        endpoint = cfg.get("endpoint", "tcp://*:5557")
        host, _, port = endpoint.replace("://*:", "://127.0.0.1:").rpartition(":")
        endpoints = {rank: (f"{host}:{int(port) + rank}", False) for rank in range(self._dp_ranks())}
        return ZmqKvEventSource(endpoints, cfg.get("topic", ""),
                                EngineEventDecoder(self.instance_id, int(self.server_args.page_size or 1)),
                                engine="SGLang")

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        return LoadMetrics(worker_id=worker_id, request_active_slots=self.active,
                           request_total_slots=int(getattr(self.server_args, "max_running_requests", None) or 0),
                           kv_total_blocks=self.total_blocks)

    def gauges(self) -> Gauges:
        return [("dynamo_sglang_active_requests", "Requests this worker has in SGLang", lambda: self.active),
                ("dynamo_component_kvstats_total_blocks", "KV pages in total", lambda: self.total_blocks)]

    def error_code(self, exc: Exception) -> ErrorCode | None:
        return None  # SGLang reports rejections as ValueError (-> bad_request) or an abort finish reason

    def errored(self) -> bool:
        return self._dead

    def _on_child_failed(self) -> None:
        log.error("SIGQUIT from an SGLang child process: the engine failed")
        self._dead = True

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGQUIT)
        for task in list(self._prefills):
            task.cancel()
        await asyncio.gather(*self._prefills, return_exceptions=True)
        if self.images is not None:
            await self.images.close()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.shutdown)

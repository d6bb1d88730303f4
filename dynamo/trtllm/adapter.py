"""TensorRT-LLM as an engine adapter: the LLM API (`tensorrt_llm.LLM`, PyTorch backend)
behind the worker harness.

Requests: `LLM.generate_async(token_ids, SamplingParams(...), streaming=True,
disaggregated_params=...)`; abort: the request's `result.abort()`. KV events and load
come from the engine's event API (`get_kv_cache_events_async`, `get_stats_async`) when
`--publish-kv-events` is on. Disaggregation: a prefill worker runs the request
`context_only` and returns TRT-LLM's `DisaggregatedParams` opaque (`request.disagg_to_wire`);
the decode worker runs it `generation_only` with those parameters. The KV moves through
TRT-LLM's own cache transceiver (configured in `--extra-engine-args`, e.g.
`cache_transceiver_config: {backend: NIXL}`).
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any, AsyncIterator

from dynamo.llm.kv_events.engine_decoder import SALT_PREFIX
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.llm.model_card import STRUCTURED_OUTPUT_KEY, context_length_of
from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest
from dynamo.runtime.wire import ErrorCode
from dynamo.trtllm.args import DynamoTrtllmArgs
from dynamo.trtllm.events import TrtllmKvEventSource, poll_stats
from dynamo.trtllm.metrics import ENGINE_METRIC_PREFIXES, TrtllmSeries, new_collector, record_finished
from dynamo.trtllm.request import (disagg_from_wire, disagg_to_wire, finish_reason, load_from_stats,
                                   sampling_kwargs)
from dynamo.worker.adapter import EngineContext, EngineInfo, EngineMetrics, Gauges
from dynamo.worker.model_files import local_model_dir
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)


def trtllm_api() -> types.SimpleNamespace:
    """The names the adapter uses from TensorRT-LLM's public LLM API (MetricsCollector: None where the
    release has none)."""
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm.llmapi import DisaggregatedParams, GuidedDecodingParams, KvCacheConfig

    try:
        from tensorrt_llm.metrics.collector import MetricsCollector
    except ImportError:
        MetricsCollector = None
    return types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams, DisaggregatedParams=DisaggregatedParams,
                                 KvCacheConfig=KvCacheConfig, GuidedDecodingParams=GuidedDecodingParams,
                                 MetricsCollector=MetricsCollector)


class TrtllmAdapter:
    name = "trtllm"

    def __init__(self, config: DynamoTrtllmArgs, api: Any = None) -> None:
        self.config = config
        self.api = api
        self.role = config.role
        self.llm: Any = None
        self.max_seq_len = 0
        self.stats: dict[str, Any] = {}
        self.active = 0
        self._results: dict[str, Any] = {}
        self._stats_task: asyncio.Task | None = None
        self.metrics: Any = None  # TensorRT-LLM's MetricsCollector, with --publish-metrics / --publish-kv-events

    async def start(self, ctx: EngineContext) -> EngineInfo:
        self.api = self.api or trtllm_api()
        kwargs = self.config.engine_kwargs()
        kwargs["kv_cache_config"] = self.api.KvCacheConfig(**kwargs["kv_cache_config"])
        self.llm = await asyncio.to_thread(lambda: self.api.LLM(**kwargs))  # loads for minutes: off the loop
        model_dir = local_model_dir(self.config.model)
        llm_args = getattr(self.llm, "args", None)
        self.max_seq_len = int(self.config.max_seq_len or getattr(llm_args, "max_seq_len", None)
                               or context_length_of(model_dir) or 8192)
        if self.config.publish_kv_events:
            self._stats_task = asyncio.get_running_loop().create_task(poll_stats(self.llm, self.stats),
                                                                      name="trtllm-stats")
        block = kwargs["kv_cache_config"]
        block_size = int(getattr(block, "tokens_per_block", None) or self.config.kv_block_size)
        served = self.config.served_model_name or self.config.model
        if kwargs.get("return_perf_metrics"):
            self.metrics = new_collector(self.api, served)
        return EngineInfo(
            model_dir=model_dir, served_name=served,
            engine_metrics=EngineMetrics(ENGINE_METRIC_PREFIXES, lambda: TrtllmSeries(self.metrics))
            if self.metrics is not None else None,
            block_size=block_size, context_length=self.max_seq_len, max_num_seqs=self.config.max_batch_size,
            max_num_batched_tokens=self.config.max_num_tokens, publishes_kv_events=self.config.publish_kv_events,
            runtime_data={STRUCTURED_OUTPUT_KEY: bool(self.config.guided_decoding_backend)},
            summary=f"{self.config.model}, TP {self.config.tensor_parallel_size}, KV block {block_size}, "
                    f"max_seq_len {self.max_seq_len}")

    def generate(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        prefill = self.role is WorkerRole.PREFILL or request.prefill_only
        params = self.api.SamplingParams(**self._sampling(request, prefill))
        disagg = None
        if prefill:
            disagg = self.api.DisaggregatedParams(request_type="context_only")
        elif request.disaggregated_params:
            disagg = self.api.DisaggregatedParams(**disagg_from_wire(request.disaggregated_params,
                                                                     "generation_only"))
        return self._stream(request, request_id, params, disagg, prefill)

    def _sampling(self, request: PreprocessedRequest, prefill: bool) -> dict[str, Any]:
        """SamplingParams arguments; structured output only with a grammar backend (TensorRT-LLM has none
        by default and would ignore the constraint): refused otherwise, never silently unconstrained."""
        kwargs = sampling_kwargs(request, self.max_seq_len, prefill)
        guided = kwargs.pop("guided_decoding", None)
        if guided and not prefill:
            if not self.config.guided_decoding_backend:
                raise ValueError("structured output (response_format, guided_*, tool_choice required / named) "
                                 "needs this TensorRT-LLM worker started with --guided-decoding-backend")
            kwargs["guided_decoding"] = self.api.GuidedDecodingParams(**guided)
        return kwargs

    async def _stream(self, request: PreprocessedRequest, request_id: str, params: Any, disagg: Any,
                      prefill: bool) -> AsyncIterator[LLMEngineOutput]:
        eos_ids = set(request.eos_token_ids)
        salt = request.routing.cache_salt if request.routing is not None else None
        extra = {"cache_salt": SALT_PREFIX + salt} if salt else {}  # TRT-LLM's KV namespace, as vLLM's
        result = self.llm.generate_async(list(request.token_ids), sampling_params=params, streaming=True,
                                         disaggregated_params=disagg, **extra)
        self._results[request_id] = result
        self.active += 1
        seen = 0
        try:
            async for output in result:
                completion = output.outputs[0]
                tokens = list(completion.token_ids)  # cumulative in the LLM API's stream
                out = LLMEngineOutput(token_ids=tokens[seen:], finish_reason=finish_reason(completion, eos_ids))
                if seen == 0:
                    out.cached_tokens = int(getattr(completion, "num_cached_tokens", 0) or 0)
                if out.finish_reason == FinishReason.STOP:
                    out.stop_reason = getattr(completion, "stop_reason", None)
                seen = len(tokens)
                if prefill and out.finish_reason is not None:
                    params_out = getattr(completion, "disaggregated_params", None)
                    if params_out is None:
                        raise RuntimeError("TRT-LLM returned no disaggregated_params for a context_only request")
                    out.disaggregated_params = {**disagg_to_wire(params_out), "transfer": "trtllm"}
                if out.finish_reason is not None:
                    record_finished(self.metrics, output)
                if out.token_ids or out.finish_reason is not None:
                    yield out
                if out.finish_reason is not None:
                    return
        finally:
            self.active -= 1
            self._results.pop(request_id, None)

    async def abort(self, request_id: str) -> None:
        result = self._results.pop(request_id, None)
        if result is not None:
            result.abort()

    def kv_event_source(self) -> TrtllmKvEventSource | None:
        if not self.config.publish_kv_events:
            return None
        return TrtllmKvEventSource(self.llm, self.config.kv_block_size)

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        if not self.stats:  # no engine stats (publishing off or none yet): what this worker knows
            return LoadMetrics(worker_id=worker_id, request_active_slots=self.active,
                               request_total_slots=self.config.max_batch_size)
        return load_from_stats(self.stats, worker_id, self.config.max_batch_size)

    def gauges(self) -> Gauges:
        kv = lambda key: lambda: float((self.stats.get("kvCacheStats") or {}).get(key) or 0)  # noqa: E731
        return [("dynamo_trtllm_active_requests", "Requests this worker has in TRT-LLM", lambda: self.active),
                ("dynamo_component_kvstats_active_blocks", "KV blocks in use", kv("usedNumBlocks")),
                ("dynamo_component_kvstats_total_blocks", "KV blocks in total", kv("maxNumBlocks"))]

    def error_code(self, exc: Exception) -> ErrorCode | None:
        return None  # TRT-LLM validates with ValueError (-> bad_request)

    def errored(self) -> bool:
        return False  # TRT-LLM's executor failure surfaces as request errors and process exit

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
        if self.llm is not None:
            await asyncio.to_thread(self.llm.shutdown)

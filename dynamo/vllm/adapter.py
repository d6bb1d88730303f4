"""vLLM as an engine adapter: the in-process `AsyncLLM` behind the worker harness.

Start-up: the KV transfer connector for the role (`disagg`), Dynamo's defaults on the
engine args (KV events on for agg/prefill), the engine built in a thread, then the facts
the card needs from its effective config. KV events come from vLLM's own ZMQ publisher;
load from a stat logger (`events.EngineStats`). vLLM's own Prometheus series (`vllm:*`, `lmcache:*`)
are re-served on the worker's `/metrics` (`ENGINE_METRIC_PREFIXES`), as Dynamo's worker does. LoRA adapters (`--enable-lora`) are loaded at
runtime as `LoRARequest`s (`load_lora`), and their KV events decode in the adapter's hash namespace.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from dynamo.llm.media import image_urls_of
from dynamo.llm.model_card import MEDIA_INPUT_KEY, STRUCTURED_OUTPUT_KEY
from dynamo.llm.rerank_pairs import RERANK_KEY
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.llm.kv_events.engine_decoder import EngineEventDecoder
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.llm.pooling_batch import POOLING_BATCH_KEY
from dynamo.runtime.wire import ErrorCode
from dynamo.vllm import disagg
from dynamo.vllm.args import DynamoVllmArgs
from dynamo.vllm.engine import apply_dynamo_defaults, engine_facts, kv_event_endpoints, start_engine
from dynamo.vllm.events import EngineStats, stat_logger_factory
from dynamo.vllm.forward_pass import fpm_stat_logger_factory
from dynamo.vllm.handler import error_code, stream_outputs, to_sampling_params
from dynamo.vllm.pooling import cross_encoder_format, pooling_model_types, stream_pooling
from dynamo.worker.adapter import EngineContext, EngineInfo, EngineMetrics, Gauges, LoraNotLoaded
from dynamo.worker.kv_relay import ZmqKvEventSource
from dynamo.worker.media_loader import ImageLoader
from dynamo.worker.role import WorkerRole


log = logging.getLogger(__name__)

# The families NVIDIA Dynamo's vLLM worker re-serves (dynamo/vllm/main.py, `setup_metrics_collection`).
ENGINE_METRIC_PREFIXES = ("vllm:", "lmcache:")


def vllm_registry() -> Any:
    """Where vLLM's metrics are, as its own `/metrics` reads them: the global registry, or one over
    the multiprocess files when PROMETHEUS_MULTIPROC_DIR is set (then LMCache's, written by the
    engine-core process, are there too)."""
    from vllm.v1.metrics.prometheus import get_prometheus_registry

    return get_prometheus_registry()


class VllmAdapter:
    name = "vllm"

    def __init__(self, config: DynamoVllmArgs, engine_args: Any) -> None:
        self.config = config
        self.engine_args = engine_args
        self.engine: Any = None
        self.stats = EngineStats(total_slots=0)
        self.facts = None
        self.publishes = False
        self.params_hook = None
        self.mode = config.mode
        self.instance_id = 0
        self.loras: dict[str, Any] = {}  # adapter name -> vLLM LoRARequest
        self.decoder: EngineEventDecoder | None = None
        self.kv_tokens = 0  # KV capacity in tokens, for forward-pass metrics
        self.images: ImageLoader | None = None  # --enable-multimodal: the requests' images
        self.image_limit = 0  # ... at most this many per prompt (vLLM's --limit-mm-per-prompt)

    async def start(self, ctx: EngineContext) -> EngineInfo:
        self.instance_id = ctx.instance_id
        xfer = disagg.setup_worker(self.engine_args, self.config, ctx.registry)
        self.publishes = apply_dynamo_defaults(self.engine_args, self.config)
        fpm = fpm_stat_logger_factory(ctx.emit_forward_pass, ctx.worker_label, lambda: self.kv_tokens)
        self.engine = await start_engine(self.engine_args, [stat_logger_factory(self.stats),
                                                            *disagg.stat_loggers(xfer), fpm])
        facts = self.facts = engine_facts(self.engine, self.engine_args)
        self.kv_tokens = facts.num_blocks * facts.block_size
        self.stats.total_slots, self.stats.total_blocks = facts.max_num_seqs, facts.num_blocks
        self.params_hook = disagg.params_hook(xfer, self.engine, self.mode)
        runtime_data = self._media_input(facts)
        runtime_data[STRUCTURED_OUTPUT_KEY] = True  # guided_decoding becomes vLLM's structured_outputs (handler.py)
        pooling = await self._pooling_types(runtime_data) if facts.pooling else None
        return EngineInfo(
            model_dir=facts.model_dir, served_name=facts.served_name, block_size=facts.block_size,
            context_length=facts.max_model_len, total_kv_blocks=facts.num_blocks, max_num_seqs=facts.max_num_seqs,
            max_num_batched_tokens=facts.max_num_batched_tokens, data_parallel_size=facts.data_parallel_size,
            publishes_kv_events=self.publishes, reports_steps=True,  # the FPM stat logger: one record per step
            max_loras=self.engine_args.max_loras if getattr(self.engine_args, "enable_lora", False) else None,
            model_types=pooling,
            engine_metrics=EngineMetrics(ENGINE_METRIC_PREFIXES, vllm_registry), runtime_data=runtime_data,
            summary=f"{facts.model}, {facts.num_blocks} KV blocks of {facts.block_size} tokens, max_num_seqs "
                    f"{facts.max_num_seqs}, context {facts.max_model_len}")

    async def _pooling_types(self, runtime_data: dict) -> list[str]:
        """A pooling engine's card types; a cross-encoder's pair format goes in `runtime_data`, and that
        the worker reads pooling inputs in batches."""
        runtime_data[POOLING_BATCH_KEY] = True
        tasks = await self.engine.get_supported_tasks()
        pairs = cross_encoder_format(self.engine, tasks)
        if pairs is not None:
            runtime_data[RERANK_KEY] = pairs.to_card()
        return pooling_model_types(tasks, pairs is not None)

    def _media_input(self, facts) -> dict:
        """--enable-multimodal: the card says the worker reads images (the model must be one that does)."""
        if not self.config.enable_multimodal:
            return {}
        if self.mode != WorkerRole.AGG:  # a disaggregated graph of Dynamo's still serves, as text
            log.warning("--enable-multimodal: images are read by aggregated workers only here (disaggregated "
                        "prefill/decode of image prompts is not supported); this %s worker serves text",
                        self.mode.value)
            return {}
        if not getattr(self.engine.model_config, "is_multimodal_model", False):  # served as the text model it is
            log.warning("--enable-multimodal: %s reads no images (not a vision-language model); image parts "
                        "sent to it are answered with a 400", facts.model)
            return {}
        self.images = ImageLoader(self.config.media_policy())
        self.image_limit = self.engine.model_config.multimodal_config.get_limit_per_prompt("image")
        return {MEDIA_INPUT_KEY: ["image"]}

    def generate(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        lora = None
        if request.lora_name is not None:
            lora = self.loras.get(request.lora_name)
            if lora is None:
                return refused(LoraNotLoaded(request.lora_name))
        if request.task in ("embed", "classify"):
            return stream_pooling(self.engine, request, request_id)
        params = to_sampling_params(request, self.facts.max_model_len, self.mode)
        if request.multi_modal_data:
            if self.images is None:
                return refused(ValueError("this worker reads no images (vLLM workers read them when started with "
                                          "--enable-multimodal)"))
            return self._with_images(request, params, request_id, lora)
        return stream_outputs(self.engine, request, params, request_id, self.params_hook, lora)

    async def _with_images(self, request: PreprocessedRequest, params: Any, request_id: str,
                           lora: Any) -> AsyncIterator[LLMEngineOutput]:
        urls = image_urls_of(request.multi_modal_data)
        if len(urls) > self.image_limit:  # before fetching any: vLLM would refuse them after
            raise ValueError(f"At most {self.image_limit} image(s) may be provided in one prompt (vLLM's "
                             f"--limit-mm-per-prompt), got {len(urls)}")
        images = await self.images.load(urls)
        async for out in stream_outputs(self.engine, request, params, request_id, self.params_hook, lora, images):
            yield out

    async def load_lora(self, name: str, path: str, lora_id: int) -> None:
        from vllm.lora.request import LoRARequest

        request = LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=path)
        if not await self.engine.add_lora(request):
            raise RuntimeError(f"vLLM refused LoRA adapter {name!r}")
        self.loras[name] = request
        if self.decoder is not None:  # its KV events carry the lora id: hash them under the name
            self.decoder.lora_names[lora_id] = name

    async def unload_lora(self, name: str) -> None:
        request = self.loras.pop(name, None)
        if request is not None:
            await self.engine.remove_lora(request.lora_int_id)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    def kv_event_source(self) -> ZmqKvEventSource | None:
        if not self.publishes:
            return None
        self.decoder = EngineEventDecoder(self.instance_id, self.facts.block_size)
        return ZmqKvEventSource(kv_event_endpoints(self.engine, self.engine_args),
                                self.engine_args.kv_events_config.topic, self.decoder, engine="vLLM")

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        return self.stats.load_metrics(worker_id)

    def gauges(self) -> Gauges:
        stats, engine = self.stats, self.engine
        return [
            ("dynamo_vllm_unfinished_requests", "Requests vLLM's output processor still tracks",
             engine.get_num_unfinished_requests),
            ("dynamo_vllm_running_requests", "Running requests (vLLM scheduler stats)", lambda: stats.running),
            ("dynamo_vllm_waiting_requests", "Waiting requests (vLLM scheduler stats)", lambda: stats.waiting),
        ]  # KV-cache gauges: the harness's, under Dynamo's names, from `load_metrics`

    def error_code(self, exc: Exception) -> ErrorCode | None:
        return error_code(exc)

    def errored(self) -> bool:
        return bool(self.engine is not None and self.engine.errored)

    async def stop(self) -> None:
        if self.images is not None:
            await self.images.close()
        if self.engine is not None:
            self.engine.shutdown()


async def refused(exc: Exception) -> AsyncIterator[LLMEngineOutput]:
    """A request the engine will not take, failing where the harness maps errors (on iteration)."""
    raise exc
    yield  # pragma: no cover - makes this an async generator

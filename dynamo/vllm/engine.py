"""The in-process vLLM engine: Dynamo's defaults applied to vLLM's engine arguments,
AsyncLLM construction off the event loop, and the facts the model card is built from
(read from the engine's real configuration once it is up).

The same code serves vLLM's CPU and CUDA builds: nothing here branches on the platform.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from dynamo.vllm.args import DEFAULT_KV_EVENTS_TOPIC, DynamoVllmArgs
from dynamo.worker.model_files import local_model_dir
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)


def apply_dynamo_defaults(engine_args: Any, config: DynamoVllmArgs) -> bool:
    """Adjust `engine_args` in place; returns True when vLLM will publish KV events.

    KV events are on by default for agg and prefill workers (decode workers never
    publish: their blocks come from prefill). vLLM binds `tcp://*:0` to a free port and
    reports it back (`get_kv_event_sources`). A user's `--kv-events-config` is kept as is.
    """
    from vllm.config.kv_events import KVEventsConfig

    if config.classify_worker and getattr(engine_args, "runner", "auto") == "auto":
        engine_args.runner = "pooling"  # Dynamo's classify worker: vLLM's pooling runner
    user = engine_args.kv_events_config
    if user is not None:
        enabled = bool(user.enable_kv_cache_events) and user.publisher == "zmq"
        if enabled and engine_args.enable_prefix_caching is False:
            log.warning("--kv-events-config given with prefix caching off: vLLM publishes no KV events")
            return False
        return enabled
    if config.mode == WorkerRole.DECODE or not config.publish_kv_events:
        return False
    if engine_args.enable_prefix_caching is False:
        log.warning("prefix caching is off: no KV events, a KV router in front of this worker will be in "
                    "approximate mode")
        return False
    engine_args.kv_events_config = KVEventsConfig(enable_kv_cache_events=True, publisher="zmq",
                                                  endpoint="tcp://*:0", topic=DEFAULT_KV_EVENTS_TOPIC)
    return True


async def start_engine(engine_args: Any, stat_loggers: list[Any]) -> Any:
    """Build the AsyncLLM in a thread: loading takes seconds to minutes and the event loop
    must keep answering /health (503) and renewing the discovery lease meanwhile."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    def build() -> Any:
        return AsyncLLM.from_engine_args(engine_args, usage_context=UsageContext.OPENAI_API_SERVER,
                                         stat_loggers=stat_loggers)

    return await asyncio.to_thread(build)


@dataclass
class EngineFacts:
    """What the model card and load metrics need, from the engine's effective config."""

    model: str
    model_dir: str
    served_name: str
    block_size: int
    num_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    prefix_caching: bool
    data_parallel_size: int
    pooling: bool = False  # `--runner pooling`: serves embeddings, not generation


def engine_facts(engine: Any, engine_args: Any) -> EngineFacts:
    cfg = engine.vllm_config
    model = cfg.model_config.model
    served = engine_args.served_model_name
    if isinstance(served, (list, tuple)):
        served = served[0] if served else None
    return EngineFacts(
        model=model,
        model_dir=local_model_dir(model, cfg.model_config.tokenizer, getattr(cfg.model_config, "revision", None)),
        served_name=served or model,
        block_size=cfg.cache_config.block_size,
        num_blocks=cfg.cache_config.num_gpu_blocks or 0,
        max_num_seqs=cfg.scheduler_config.max_num_seqs,
        max_num_batched_tokens=cfg.scheduler_config.max_num_batched_tokens,
        max_model_len=cfg.model_config.max_model_len,
        prefix_caching=bool(cfg.cache_config.enable_prefix_caching),
        data_parallel_size=cfg.parallel_config.data_parallel_size,
        pooling=getattr(cfg.model_config, "runner_type", "generate") == "pooling",
    )


def kv_event_endpoints(engine: Any, engine_args: Any) -> dict[int, tuple[str, bool]]:
    """Per engine (DP rank): (address, whether this process binds it).

    vLLM binds wildcard endpoints (and reports the address it bound: we connect there);
    to any other endpoint it connects out, so the subscriber must bind it."""
    from dynamo.vllm.events import is_bind_endpoint, subscriber_address

    configured = engine_args.kv_events_config.endpoint
    if not is_bind_endpoint(configured):
        return {0: (configured, True)}
    sources = {}
    try:
        sources = {rank: cfg.endpoint for rank, cfg in engine.get_kv_event_sources().items()}
    except Exception as exc:  # older vLLM without the query
        log.debug("get_kv_event_sources: %s", exc)
    if not sources:
        sources = {0: configured}
    if any(ep.endswith(":0") for ep in sources.values()):
        raise RuntimeError(f"vLLM did not report its KV-event port ({sources}); pass --kv-events-config with "
                           "an explicit endpoint")
    return {rank: (subscriber_address(ep), False) for rank, ep in sources.items()}

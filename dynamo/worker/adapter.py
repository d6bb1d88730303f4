"""The engine adapter contract: what an engine package supplies to the worker harness.

An adapter builds its engine from its own arguments and translates between our wire
messages and the engine's API; everything else a worker does (discovery, the model
card, health, drain, KV-event and load publishing, request decoding, error mapping,
aborts on cancel) is the harness's (`dynamo.worker.harness`).

Request contract: `generate(request, request_id)` streams `LLMEngineOutput` deltas (token
ids new since the previous item; the last one carries `finish_reason`). The harness calls
`abort(request_id)` when the stream ends without a finish reason (client gone, drain
deadline, error), then closes the stream. Errors raised from `generate` are mapped by
`error_code` (else LoraNotLoaded -> lora_not_loaded, ValueError/TypeError -> bad_request,
anything else -> internal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol

from prometheus_client import CollectorRegistry

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.llm.kv_events.protocol import KvCacheEvent, LoadMetrics, StorageTier
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.role import WorkerRole

class KvEmit(Protocol):
    """Publish one KV event of the worker's, in its storage tier (the device's unless offloaded)."""

    def __call__(self, event: KvCacheEvent, storage_tier: StorageTier = "device") -> None: ...
Gauges = list[tuple[str, str, Callable[[], float]]]


@dataclass(frozen=True)
class EngineMetrics:
    """The engine's own Prometheus series, re-served on the worker's `/metrics` as NVIDIA Dynamo's
    workers do (`register_engine_metrics_callback`): the families whose names start with one of
    `prefixes`, collected from `registry()` at each scrape, with the worker's labels added."""

    prefixes: tuple[str, ...]  # e.g. ("vllm:", "lmcache:")
    registry: Callable[[], Any]  # the registry to collect from, looked up per scrape


@dataclass(frozen=True)
class EngineContext:
    """What the harness hands an adapter when it builds the engine."""

    role: WorkerRole
    instance_id: int
    registry: CollectorRegistry  # the worker's /metrics registry, for engine-specific collectors
    emit_kv_event: KvEmit  # for engines that report KV events in-process (the mocker)
    advertise_host: str = "127.0.0.1"  # where peers reach this worker (disaggregation bootstrap)
    # Forward-pass metrics (dynamo.llm.forward_pass): engines push one per scheduler step.
    emit_forward_pass: Callable[[Any], None] = lambda fpm: None

    @property
    def worker_label(self) -> str:
        """The instance id as FPM messages name the worker (hex)."""
        return f"{self.instance_id:x}"


@dataclass
class EngineInfo:
    """The engine's effective configuration, read once it is up; the model card is built from it."""

    model_dir: str  # directory with the tokenizer/config files the frontend reads
    served_name: str
    block_size: int
    context_length: int
    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    data_parallel_size: int = 1
    publishes_kv_events: bool = False
    # The engine calls EngineContext.emit_forward_pass once per scheduler step (the mocker, vLLM's stat logger):
    # the canary then also probes a busy engine that has stopped stepping; without it, idle engines only.
    reports_steps: bool = False
    # Disaggregation: where decode workers reach this prefill worker (SGLang bootstrap).
    disaggregated_endpoint: dict[str, Any] | None = None
    runtime_data: dict[str, Any] = field(default_factory=dict)
    max_loras: int | None = None  # LoRA enabled (--enable-lora): adapters batched together; None: off
    summary: str = ""  # one human line for the start-up log
    # What the engine serves when it decides (a pooling engine: ["embedding"]); None: the worker's setting.
    model_types: list[str] | None = None
    engine_metrics: EngineMetrics | None = None  # the engine's own series to re-serve; None: none


class KvEventSource(Protocol):
    """An engine-side KV-event stream (e.g. a ZMQ publisher) relayed by the harness."""

    relayed: int

    async def start(self, emit: KvEmit) -> None: ...

    async def close(self) -> None: ...


class EngineAdapter(Protocol):
    name: str  # "mocker", "vllm", "sglang", "trtllm": the card's runtime_data engine

    async def start(self, ctx: EngineContext) -> EngineInfo:
        """Build and start the engine (may take minutes; run blocking work in a thread)."""

    def generate(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        """Token ids in, token deltas out (see the module docstring)."""

    async def abort(self, request_id: str) -> None:
        """Free the engine's resources for an unfinished request (idempotent)."""

    def kv_event_source(self) -> KvEventSource | None:
        """The engine's KV-event stream to relay, or None (in-process emitters use ctx.emit_kv_event)."""

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        """Current load, published on `kv_metrics` for routers and planners."""

    def gauges(self) -> Gauges:
        """Engine gauges for the worker's /metrics: (name, help, read function)."""

    def error_code(self, exc: Exception) -> ErrorCode | None:
        """Request-plane error code for an engine exception (bad_request, overloaded), or None."""

    def errored(self) -> bool:
        """True once the engine is dead: the worker leaves discovery and exits 1."""

    async def stop(self) -> None:
        """Shut the engine down (after drain)."""


class LoraNotLoaded(ValueError):
    """A request names a LoRA adapter the worker does not hold: request-plane code `lora_not_loaded`, so its
    caller sends it to another worker holding the adapter (or says the adapter is gone) instead of blaming the
    client."""

    def __init__(self, name: str) -> None:
        super().__init__(f"LoRA adapter {name!r} is not loaded on this worker")
        self.name = name


class LoraEngine(Protocol):
    """Optional: adapters of an engine that serves LoRA (`EngineInfo.max_loras` set).

    A request for an adapter carries `PreprocessedRequest.lora_name`; `generate` applies it
    and refuses (`LoraNotLoaded`) one for an adapter it does not hold."""

    async def load_lora(self, name: str, path: str, lora_id: int) -> None:
        """Load the adapter in local directory `path` (PEFT layout); raise ValueError if unusable."""

    async def unload_lora(self, name: str) -> None:
        """Drop the adapter (requests already running with it may finish)."""

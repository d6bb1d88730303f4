"""One worker life cycle for every engine: config -> engine -> card -> register -> serve
-> drain.

`serve_worker(adapter, spec, stop)`:
1. discovery + the system server first (`/health` answers 503 while the engine loads);
2. `adapter.start()` builds the engine (a failure exits 1);
3. KV events (in-process or relayed from the engine's publisher), load metrics and
   forward-pass metrics (FPM, pushed by the engine per step) go to the event plane; a
   publishing worker also answers router resync (`kv_query`); `/metrics` gets NVIDIA Dynamo's
   KV-cache gauges (`KvCacheGauges`) and the engine's own series (`EngineInfo.engine_metrics`);
4. the model card is built from the engine's effective config and registered with the
   typed `generate` endpoint; then the log line readiness probes grep:
   `Worker <namespace>.<component>.<endpoint> initialized (instance <hex>)`;
5. it waits for SIGTERM or engine death. Death: unhealthy, leave discovery, exit 1.
   SIGTERM: leave discovery, keep serving through DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS (default 5; ended
   early once no request came for a second), then refuse new requests and let in-flight ones finish within
   DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS (default 900), as in NVIDIA Dynamo, abort the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Sequence

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily

from dynamo.llm.forward_pass import start_fpm_relay
from dynamo.llm.kv_events.publisher import KvEventPublisher, LoadPublisher
from dynamo.llm.model_card import (DEFAULT_THINKING_MODE_KEY, ModelDeploymentCard, RuntimeConfig, build_card,
                                   card_record)
from dynamo.llm.protocol import PreprocessedRequest
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.llm.kv_events.local_state import KV_QUERY_ENDPOINT
from dynamo.runtime.distributed import DistributedRuntime, advertise_host
from dynamo.runtime.logs import RequestEvents
from dynamo.runtime import records
from dynamo.runtime.records import EndpointId
from dynamo.runtime.system_server import RelabeledFamilies
from dynamo.runtime.loop_monitor import LoopLagMonitor
from dynamo.worker import canary
from dynamo.worker.adapter import EngineAdapter, EngineContext, EngineInfo
from dynamo.worker.engine_args import ModelCardArgs
from dynamo.worker.kv_relay import KvSink
from dynamo.worker.lora import ROUTE as LORA_ROUTE, LoraManager
from dynamo.worker.requests import RequestHandler
from dynamo.worker.role import WorkerRole

log = logging.getLogger("dynamo.worker")

ENGINE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """The harness's view of a worker's config (each engine's args build one)."""

    namespace: str  # where it registers: DYN_NAMESPACE with DYN_NAMESPACE_WORKER_SUFFIX appended (`worker_namespace`)
    endpoint: str | None  # dyn://ns.component.endpoint; None: the role's default
    discovery_backend: str | None
    role: WorkerRole
    event_plane: str | None = None
    migration_limit: int = 0
    model_types: tuple[str, ...] = ("chat", "completions")
    request_limit: int = 0
    card_args: ModelCardArgs = field(default_factory=ModelCardArgs)  # parsers, template, thinking default

    def endpoint_path(self) -> str:
        return self.endpoint or f"dyn://{self.namespace}.{self.role.default_component}.generate"

    @classmethod
    def of(cls, config: Any, role: WorkerRole) -> WorkerSpec:
        """The spec of an engine's args (worker_namespace, endpoint, discovery_backend, event_plane,
        migration_limit, model_types, engine_request_limit, the model card's settings) in the role the
        engine resolved."""
        return cls(namespace=config.worker_namespace, endpoint=config.endpoint,
                   discovery_backend=config.discovery_backend, role=role, event_plane=config.event_plane,
                   migration_limit=config.migration_limit, model_types=tuple(config.model_types),
                   request_limit=config.engine_request_limit, card_args=config)


def model_card(adapter: EngineAdapter, spec: WorkerSpec, info: EngineInfo) -> ModelDeploymentCard:
    shown = spec.card_args
    runtime_data = {"engine": adapter.name, **info.runtime_data}
    if shown.default_thinking_mode is not None:
        runtime_data[DEFAULT_THINKING_MODE_KEY] = shown.default_thinking_mode
    runtime_config = RuntimeConfig(
        total_kv_blocks=info.total_kv_blocks, max_num_seqs=info.max_num_seqs,
        max_num_batched_tokens=info.max_num_batched_tokens, data_parallel_size=info.data_parallel_size,
        publishes_kv_events=info.publishes_kv_events, enable_local_indexer=info.publishes_kv_events,
        disaggregated_endpoint=info.disaggregated_endpoint,
        tool_call_parser=shown.tool_call_parser, reasoning_parser=shown.reasoning_parser, runtime_data=runtime_data)
    card = build_card(info.model_dir, name=info.served_name, block_size=info.block_size,
                      context_length=info.context_length, worker_type=spec.role.card_type,
                      migration_limit=spec.migration_limit, model_type=list(info.model_types or spec.model_types),
                      runtime_config=runtime_config, chat_template=shown.custom_jinja_template)
    card.max_gpu_lora_count = info.max_loras
    return card


class Worker:
    """One engine served on the request plane; owns everything it starts."""

    def __init__(self, runtime: DistributedRuntime, eid: EndpointId, adapter: EngineAdapter,
                 spec: WorkerSpec) -> None:
        self.runtime, self.eid, self.adapter, self.spec = runtime, eid, adapter, spec
        self.kv = KvSink(runtime.instance_id)
        self.handler = RequestHandler(adapter, spec.request_limit, RequestEvents(runtime.settings.logging_jsonl))
        self.source = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.started = False
        self._canary: asyncio.Task | None = None
        # A held loop delays the discovery keep-alive too: past the TTL the worker drops out of
        # routing until it re-registers. The warning names the stall in the worker's own log.
        self.lag = LoopLagMonitor(lambda _lag: None, interval=0.05)

    async def start(self) -> None:
        rt, adapter = self.runtime, self.adapter
        self.lag.start()
        self._closers.append(self.lag.stop)
        fpm = await start_fpm_relay(rt, self.eid.namespace, self.eid.component)  # forward-pass metrics
        self._closers.append(fpm.close)
        ctx = EngineContext(role=self.spec.role, instance_id=rt.instance_id, registry=rt.registry,
                            emit_kv_event=self._progressing(self.kv.push),
                            advertise_host=advertise_host(rt.store.backend, rt.settings)[1],
                            emit_forward_pass=self._progressing(fpm.push))
        self.started = True  # adapter.stop() must also clean up a half-started engine
        began = time.monotonic()
        info = await adapter.start(ctx)
        load_seconds = time.monotonic() - began
        if info.publishes_kv_events:
            await self._publish_kv_events()
        load = await LoadPublisher.create(self.spec.event_plane, rt.store, self.eid.namespace, self.eid.component,
                                          rt.instance_id, lambda: adapter.load_metrics(rt.instance_id))
        self._closers.append(load.close)
        self._gauges()
        self._dynamo_metrics(info, load_seconds)
        card = model_card(adapter, self.spec, info)
        await rt.serve_endpoint(self.eid, self.handler.generate, request_type=PreprocessedRequest,
                                card_json=card_record(card, *self.eid, rt.instance_id))
        self.loras = LoraManager(rt, self.eid, adapter, card, info.max_loras)
        if rt.system is not None:  # /v1/loras: answers "not enabled" unless the engine serves LoRA
            rt.system.add_routes(LORA_ROUTE, self.loras.app)
        log.info("%s engine ready: model %r, %s, role %s, KV events %s", adapter.name, info.served_name,
                 info.summary or f"{info.total_kv_blocks} KV blocks of {info.block_size} tokens", self.spec.role,
                 "on" if info.publishes_kv_events else "off")
        log.info("Worker %s.%s.%s initialized (instance %x)", self.eid.namespace, self.eid.component,
                 self.eid.endpoint, rt.instance_id)
        self._start_canary(info)

    def _progressing(self, sink: Callable[..., None]) -> Callable[..., None]:
        """`sink`, each call also engine progress for the canary: a forward pass (one engine step) or a KV event
        moves the engine on as output does, so a long chunked prefill that streams nothing is not a stall."""
        progress = self.handler.progress

        def emit(*args: Any, **kwargs: Any) -> None:
            progress()
            sink(*args, **kwargs)
        return emit

    def _start_canary(self, info: EngineInfo) -> None:
        """Dynamo's canary health checks (`canary.py`), when DYN_HEALTH_CHECK_ENABLED; not on a prefill worker (a
        canary's KV would wait for a transfer nobody pulls) nor an embedding-only one."""
        settings = self.runtime.settings
        if not settings.health_check_enabled or self.spec.role is WorkerRole.PREFILL or \
                not {"chat", "completions"} & set(info.model_types or self.spec.model_types):
            return
        try:
            request = canary.payload(settings, info.served_name, info.model_dir)
        except ValueError as exc:
            log.warning("%s; the canary uses the default payload", exc)
            request = canary.payload(replace(settings, health_check_payload=None), info.served_name,
                                     info.model_dir)
        probe = canary.Canary(self.handler, self.runtime.health, str(self.eid), request, settings.canary_wait_time,
                              settings.health_check_request_timeout, self.runtime.registry, self._membership(),
                              busy_probes=info.reports_steps)
        self._canary = asyncio.get_running_loop().create_task(probe.run())
        log.info("canary health checks on: after %gs without engine progress (%s), %gs to answer",
                 settings.canary_wait_time, "idle or stalled" if info.reports_steps else
                 "idle only: the engine reports no steps", settings.health_check_request_timeout)

    def _membership(self) -> canary.DiscoveryMembership | None:
        """The generate endpoint's records for the canary to withdraw while the engine is hung; None with Kubernetes
        discovery, where the pod's readiness (its /health) already decides whether its records are seen."""
        store, eid, instance = self.runtime.store, self.eid, self.runtime.instance_id
        if store.backend == "kubernetes":
            return None
        keys = [records.instance_key(eid, instance), records.mdc_key(eid, instance)]
        return canary.DiscoveryMembership(store, keys)

    async def _publish_kv_events(self) -> None:
        rt, eid = self.runtime, self.eid
        publisher = await KvEventPublisher.create(self.spec.event_plane, rt.store, eid.namespace, eid.component,
                                                  rt.instance_id, eid.endpoint)
        self._closers.append(publisher.close)
        self.kv.publisher = publisher
        self.source = self.adapter.kv_event_source()
        if self.source is not None:
            await self.source.start(self.kv.push)
            self._closers.insert(0, self.source.close)
        await rt.serve_endpoint(rt.endpoint_id(f"{eid.namespace}.{eid.component}.{KV_QUERY_ENDPOINT}"),
                                self.kv.local.handler)

    def _gauges(self) -> None:
        reg, name, source = self.runtime.registry, self.adapter.name, self.source
        rows = [(f"dynamo_{name}_handler_inflight_requests", "Requests inside the worker's generate handler",
                 lambda: self.handler.inflight),
                (f"dynamo_{name}_kv_events_relayed", "KV events relayed from the engine (-1: no relay)",
                 lambda: source.relayed if source is not None else -1),
                (f"dynamo_{name}_event_loop_lag_max_seconds", "Longest the worker's event loop was held",
                 lambda: self.lag.worst),
                *self.adapter.gauges()]
        for metric, doc, fn in rows:
            Gauge(metric, doc, registry=reg).set_function(fn)

    def _dynamo_metrics(self, info: EngineInfo, load_seconds: float) -> None:
        """The series NVIDIA Dynamo's workers add to `/metrics`, with its names and labels: the
        KV-cache gauges (not on an embedding-only engine: it has no KV cache to report, and Dynamo
        skips them there too) and the engine's own series, labelled as Dynamo's auto-labels."""
        reg, eid, model = self.runtime.registry, self.eid, info.served_name
        if list(info.model_types or ()) != ["embedding"]:
            reg.register(KvCacheGauges(lambda: self.adapter.load_metrics(self.runtime.instance_id), model,
                                       eid.component, load_seconds))
        if info.engine_metrics is not None:
            labels = {"dynamo_namespace": eid.namespace, "dynamo_component": eid.component,
                      "dynamo_endpoint": eid.endpoint, "worker_id": f"{self.runtime.instance_id:x}",
                      "model": model, "model_name": model}
            reg.register(RelabeledFamilies(info.engine_metrics.registry, info.engine_metrics.prefixes, labels))

    async def wait(self, stop: asyncio.Event) -> int:
        """Serve until SIGTERM (drain, 0) or engine death (1)."""
        dead = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(self._watch_engine(dead))
        try:
            await first_of(stop, dead)
        finally:
            watcher.cancel()
            await self._stop_canary()
        if dead.is_set():
            log.error("%s engine died; leaving discovery and exiting", self.adapter.name)
            self.runtime.health.engine_ok = False
            await self.runtime.unregister()
            return 1
        await self.drain()
        return 0

    async def _stop_canary(self) -> None:
        """The drain (or death) owns the endpoint's health and records from here: the canary is stopped before
        they change, so a rejoin it had under way cannot put the records back after the unregister."""
        if self._canary is not None:
            self._canary.cancel()
            await asyncio.gather(self._canary, return_exceptions=True)

    async def _watch_engine(self, dead: asyncio.Event) -> None:
        while not self.adapter.errored():
            await asyncio.sleep(ENGINE_POLL_SECONDS)
        dead.set()

    async def drain(self) -> None:
        """Graceful stop: out of discovery, and no new requests (a caller that had not seen it leave yet is
        answered `draining` and goes to another worker); in-flight ones run to completion within the grace
        period plus the drain timeout (`RuntimeSettings.drain_secs`), then are aborted."""
        limit = self.runtime.settings.drain_secs()
        server = self.runtime.server
        if server is not None and server.inflight():
            log.info("draining %d request(s) in flight (up to %gs)", server.inflight(), limit)
        if not await self.runtime.drain(limit):
            log.warning("%d request(s) still running after %gs; aborting them", server.inflight(), limit)
        if server is None:
            return
        await server.close()  # cancels what is left: each handler aborts its engine request
        await asyncio.sleep(0.1)  # let the aborts reach the engine before it shuts down

    async def close(self) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception as exc:
                log.debug("close: %s", exc)
        if self.started:
            await self.adapter.stop()


class KvCacheGauges:
    """NVIDIA Dynamo's `LLMBackendMetrics` gauges (dynamo/common/utils/prometheus.py), read from the
    adapter's load metrics at each scrape: `dynamo_component_{total_blocks,gpu_cache_usage_percent,
    kv_cache_hit_rate}` labelled `model`, `dynamo_component`, `dp_rank`, and
    `dynamo_component_model_load_time_seconds` labelled `model`, `dynamo_component`."""

    PER_RANK = (("dynamo_component_total_blocks", "Total number of KV cache blocks available on the worker.",
                 lambda m: m.kv_total_blocks),
                ("dynamo_component_gpu_cache_usage_percent", "GPU cache usage as a percentage (0.0-1.0).",
                 lambda m: m.gpu_cache_usage_perc),
                ("dynamo_component_kv_cache_hit_rate", "Prefix cache hit rate (0.0-1.0). Portable across engines.",
                 lambda m: m.gpu_prefix_cache_hit_rate))

    def __init__(self, load: Callable[[], LoadMetrics], model: str, component: str, load_seconds: float) -> None:
        self.load, self.model, self.component, self.load_seconds = load, model, component, load_seconds

    def collect(self) -> list[GaugeMetricFamily]:
        metrics = self.load()
        families = []
        for name, doc, read in self.PER_RANK:
            family = GaugeMetricFamily(name, doc, labels=("model", "dynamo_component", "dp_rank"))
            family.add_metric([self.model, self.component, str(metrics.dp_rank)], read(metrics))
            families.append(family)
        load_time = GaugeMetricFamily("dynamo_component_model_load_time_seconds", "Model load time in seconds.",
                                      labels=("model", "dynamo_component"))
        load_time.add_metric([self.model, self.component], self.load_seconds)
        return [*families, load_time]


async def first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def serve_worker(adapter: EngineAdapter, spec: WorkerSpec, stop: asyncio.Event,
                       notices: Sequence[str] = ()) -> int:
    """The whole worker life: 0 after a graceful stop, 1 when the engine fails or dies. `notices`
    (NVIDIA Dynamo flags accepted without effect) are logged first, as warnings."""
    for text in notices:
        log.warning("%s", text)
    runtime = await DistributedRuntime.create(spec.discovery_backend, spec.namespace)
    try:
        await runtime.start_system_server()  # /health answers 503 while the engine loads
        worker = Worker(runtime, runtime.endpoint_id(spec.endpoint_path()), adapter, spec)
        try:
            try:
                await worker.start()
            except Exception:
                log.exception("%s engine failed to start", adapter.name)
                return 1
            return await worker.wait(stop)
        finally:
            await worker.close()
    finally:
        await runtime.shutdown()

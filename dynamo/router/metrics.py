"""Prometheus metrics of KV routers, shared by the frontend and the `dynamo.router`
service. Per-request figures (decision time, overlap, Dynamo's router series through
`request_metrics`) are observed on the hot path; everything that is state (mode, hit rate,
per-worker load, events applied) is read from the routers at scrape time by a collector, so
routing pays nothing for it.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.config import KvMode
from dynamo.router.kv_router import KvRouter
from dynamo.router.policy import Role, WorkerPool
from dynamo.router.request_metrics import ROUTER_SERIES, RouterRequestMetrics, phase
from dynamo.router.selection import Selection

_DECISION = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_BLOCKS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


class RouterMetrics:
    """The KV router's metric families on one registry (the process's one routing policy owns them),
    beside Dynamo's router series (`series`); each source's `rows()` yields (model, KvRouter, mode in
    effect, queued requests, worker type) at scrape time. Every family labels a pool by its model and
    `worker_type` (its role: a model's prefill pool is `worker_type="prefill"`), as Dynamo's series do."""

    def __init__(self, registry: CollectorRegistry, prefix: str, router_id: int = 0) -> None:
        self.decision = Histogram(f"{prefix}_router_decision_seconds", "Time to pick a worker (hash, match, cost)",
                                  ("model", "worker_type"), buckets=_DECISION, registry=registry)
        self.overlap = Histogram(f"{prefix}_router_overlap_blocks", "Cached prefix blocks on the chosen worker",
                                 ("model", "worker_type"), buckets=_BLOCKS, registry=registry)
        self.series = RouterRequestMetrics(registry, router_id)
        self.collector = _RouterCollector(prefix)
        registry.register(self.collector)

    @classmethod
    def attach(cls, registry: CollectorRegistry, prefix: str,
               rows: Callable[[], Iterable[tuple[str, KvRouter, KvMode, int, str]]],
               counts: Callable[[], dict[str, int]] | None = None, router_id: int = 0) -> "RouterMetrics":
        metrics = cls(registry, prefix, router_id)
        metrics.collector.sources.append((rows, counts or dict))
        return metrics

    def booked(self, pool: WorkerPool, endpoint, request: PreprocessedRequest, selection: Selection,
               started: float) -> None:
        """A KV selection booked on a worker of `endpoint` (`started`: when its decision began,
        time.perf_counter)."""
        self.decision.labels(pool.model, pool.role.value).observe(time.perf_counter() - started)
        self.overlap.labels(pool.model, pool.role.value).observe(selection.overlap_blocks)
        prefill = pool.role is Role.PREFILL
        lost = selection.best_overlap_blocks - selection.overlap_blocks if prefill else None
        self.series.routed(request.request_id, endpoint, pool.model, phase(prefill, request), len(request.token_ids),
                           cached=(selection.overlap_blocks, selection.required_blocks), overhead=selection.overhead,
                           blocks_lost=lost)


class _RouterCollector:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sources: list[tuple[Callable, Callable]] = []

    def _rows(self):
        for rows, _ in self.sources:
            yield from rows()

    def _counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for _, counts in self.sources:
            for key, n in counts().items():
                total[key] = total.get(key, 0) + n
        return total

    def describe(self):
        return []

    def collect(self):
        p = self.prefix
        # worker_type (decode or prefill) as Dynamo labels its series, beside the model: a model's two pools.
        mode = GaugeMetricFamily(f"{p}_router_mode", "1 for the routing mode in effect per model",
                                 labels=("model", "worker_type", "mode"))
        hit = GaugeMetricFamily(f"{p}_router_kv_hit_rate", "Overlap blocks / prompt blocks of routed requests",
                                labels=("model", "worker_type"))
        routed = CounterMetricFamily(f"{p}_router_requests", "Requests routed", labels=("model", "worker_type"))
        blocks = GaugeMetricFamily(f"{p}_worker_active_decode_blocks", "Active KV blocks booked per worker, by every "
                                   "model it serves (a base model's and its adapters' rows show the same load)",
                                   labels=("model", "worker_id", "dp_rank", "worker_type"))
        prefill = GaugeMetricFamily(f"{p}_worker_active_prefill_tokens", "Prompt tokens awaiting prefill per worker, by "
                                    "every model it serves",
                                    labels=("model", "worker_id", "dp_rank", "worker_type"))
        tree = GaugeMetricFamily(f"{p}_router_indexed_blocks", "Blocks indexed per worker",
                                 labels=("model", "worker_id", "dp_rank", "worker_type"))
        queued = GaugeMetricFamily(f"{p}_router_queue_pending_requests", "Requests waiting in the router queue",
                                   labels=("model", "worker_type"))
        events = CounterMetricFamily("dynamo_component_kv_cache_events_applied", "KV events applied by the router",
                                     labels=("event_type", "status"))
        totals: dict[tuple[str, str], int] = {}
        for model, router, effective, pending, worker_type in self._rows():
            queued.add_metric((model, worker_type), pending)
            for m in KvMode:
                mode.add_metric((model, worker_type, m), 1.0 if m == effective else 0.0)
            stats = router._stats
            hit.add_metric((model, worker_type),
                           stats["overlap_blocks"] / stats["prompt_blocks"] if stats["prompt_blocks"] else 0.0)
            routed.add_metric((model, worker_type), stats["requests"])
            for (w, r), load in router.active.loads().items():
                blocks.add_metric((model, str(w), str(r), worker_type), load.get("active_blocks", 0))
                prefill.add_metric((model, str(w), str(r), worker_type), load.get("active_prefill_tokens", 0))
            for (w, r), size in router._tree_sizes().items():
                tree.add_metric((model, str(w), str(r), worker_type), size)
            for key, n in router.indexer.counts.items():
                totals[key] = totals.get(key, 0) + n
        for (kind, status), n in sorted(totals.items()):
            events.add_metric((kind, status), n)
        resyncs = CounterMetricFamily(f"{p}_router_kv_resyncs", "Worker KV state re-syncs after lost events",
                                      labels=("status",))
        extra = self._counts()
        for status in ("ok", "failed"):
            resyncs.add_metric((status,), extra.get(f"resync_{status}", 0))
        yield from (mode, blocks, prefill, tree, queued, events, resyncs)
        if f"{p}_router" != ROUTER_SERIES:  # `dynamo.router`'s prefix: Dynamo's own series of these names serve
            yield from (hit, routed)

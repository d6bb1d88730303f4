"""Prometheus metrics of KV routers, shared by the frontend and the `dynamo.router`
service. Per-request figures (decision time, overlap) are observed on the hot path;
everything that is state (mode, hit rate, per-worker load, events applied) is read from
the routers at scrape time by a collector, so routing pays nothing for it.
"""

from __future__ import annotations

from typing import Callable, Iterable

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dynamo.router.config import KvMode
from dynamo.router.kv_router import KvRouter
from dynamo.router.selection import RoutingOverhead

_DECISION = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_BLOCKS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
_HIT_RATE = tuple(round(0.05 * i, 2) for i in range(21))  # Dynamo's linear buckets, 0 to 1 by 0.05
_ISL = (50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000)


def _log_buckets(low: float, high: float, count: int) -> tuple[float, ...]:
    """`count` bounds from `low` to `high`, evenly spaced in log (Dynamo's `generate_log_buckets`)."""
    return tuple(round(low * (high / low) ** (i / (count - 1)), 6) for i in range(count))


_TTFT = _log_buckets(0.001, 480.0, 18)  # Dynamo's router buckets, as the four below
_ITL = _log_buckets(0.001, 2.0, 13)
_OSL = _log_buckets(50.0, 32000.0, 10)
_HASHING_MS = tuple(0.001 * 2**i for i in range(15))  # CPU-bound phases
_PHASE_MS = tuple(round(0.01 * 3**i, 2) for i in range(17))  # lookup, scheduling, total
# (name, help, buckets) of Dynamo's per-decision overhead histograms, in RoutingOverhead's order.
_OVERHEAD = (
    ("block_hashing", "Time spent computing block hashes in milliseconds", _HASHING_MS),
    ("seq_hashing", "Time spent computing sequence hashes in milliseconds", _HASHING_MS),
    ("indexer_find_matches", "Time spent in indexer find_matches in milliseconds", _PHASE_MS),
    ("scheduling", "Time spent in scheduler worker selection in milliseconds", _PHASE_MS),
    ("total", "Total routing overhead per request in milliseconds", _PHASE_MS),
)
# Dynamo's router request metrics keep the `dynamo_component_` prefix whatever --metrics-prefix says,
# labelled by the endpoint routed to and the router's own instance id.
_ENDPOINT_LABELS = ("dynamo_namespace", "dynamo_component", "dynamo_endpoint", "router_id")


class RouterMetrics:
    """The router's metric families on one registry (the process's one routing policy owns them);
    each source's `rows()` yields (model, KvRouter, mode in effect, queued requests, worker type) at
    scrape time."""

    def __init__(self, registry: CollectorRegistry, prefix: str, router_id: int = 0) -> None:
        self.decision = Histogram(f"{prefix}_router_decision_seconds", "Time to pick a worker (hash, match, cost)",
                                  ("model",), buckets=_DECISION, registry=registry)
        self.overlap = Histogram(f"{prefix}_router_overlap_blocks", "Cached prefix blocks on the chosen worker",
                                 ("model",), buckets=_BLOCKS, registry=registry)
        self.requests = Counter("dynamo_component_router_requests", "Requests the router routed",
                                _ENDPOINT_LABELS, registry=registry)
        self.kv_hit_rate = Histogram("dynamo_component_router_kv_hit_rate", "Predicted KV cache hit rate at "
                                     "routing time (0.0-1.0)", _ENDPOINT_LABELS, buckets=_HIT_RATE,
                                     registry=registry)
        self.isl = Histogram("dynamo_component_router_input_sequence_tokens", "Input sequence length in tokens "
                             "observed at the router", _ENDPOINT_LABELS, buckets=_ISL, registry=registry)
        self.ttft = Histogram("dynamo_component_router_time_to_first_token_seconds", "Time to first token observed "
                              "at the router", _ENDPOINT_LABELS, buckets=_TTFT, registry=registry)
        self.itl = Histogram("dynamo_component_router_inter_token_latency_seconds", "Average inter-token latency "
                             "observed at the router", _ENDPOINT_LABELS, buckets=_ITL, registry=registry)
        self.osl = Histogram("dynamo_component_router_output_sequence_tokens", "Output sequence length in tokens "
                             "observed at the router", _ENDPOINT_LABELS, buckets=_OSL, registry=registry)
        self.router_id = str(router_id)
        # One series each, labelled by this router as Dynamo labels them.
        self._overhead = tuple(
            Histogram(f"dynamo_router_overhead_{name}_ms", text, ("router_id",), buckets=buckets,
                      registry=registry).labels(self.router_id)
            for name, text, buckets in _OVERHEAD)
        self._streams: dict[str, _Stream] = {}
        self.collector = _RouterCollector(prefix)
        registry.register(self.collector)

    @classmethod
    def attach(cls, registry: CollectorRegistry, prefix: str,
               rows: Callable[[], Iterable[tuple[str, KvRouter, KvMode, int, str]]],
               counts: Callable[[], dict[str, int]] | None = None, router_id: int = 0) -> "RouterMetrics":
        metrics = cls(registry, prefix, router_id)
        metrics.collector.sources.append((rows, counts or dict))
        return metrics

    def endpoint_series(self, endpoint) -> None:
        """Create `endpoint`'s router request series at 0 before any request: Prometheus' increase()
        cannot count a series' first sample, so series born by a burst of requests would hide that
        burst from the SLA planner."""
        labels = self._labels(endpoint)
        for family in (self.requests, self.kv_hit_rate, self.isl, self.ttft, self.itl, self.osl):
            family.labels(*labels)

    def _labels(self, endpoint) -> tuple[str, str, str, str]:
        return endpoint.namespace, endpoint.component, endpoint.endpoint, self.router_id

    def routed(self, request_id: str, endpoint, overlap_blocks: int, prompt_blocks: int, prompt_tokens: int,
               overhead: RoutingOverhead | None = None) -> None:
        """A request booked on a worker of `endpoint` (an EndpointId): the share of its prompt's blocks
        the router found cached there (what the SLA planner reads as the KV hit rate), and what the
        decision cost."""
        labels = self._labels(endpoint)
        self._streams[request_id] = _Stream(labels, time.monotonic())
        self.requests.labels(*labels).inc()
        self.isl.labels(*labels).observe(prompt_tokens)
        if prompt_blocks:
            self.kv_hit_rate.labels(*labels).observe(min(overlap_blocks / prompt_blocks, 1.0))
        if overhead is not None:
            for histogram, seconds in zip(self._overhead, overhead):
                histogram.observe(seconds * 1000.0)

    def first_token(self, request_id: str) -> None:
        """The request's first token reached the router: its TTFT from the booking."""
        stream = self._streams.get(request_id)
        if stream is not None and stream.first_token_at is None:
            stream.first_token_at = time.monotonic()
            self.ttft.labels(*stream.labels).observe(stream.first_token_at - stream.booked_at)

    def finished(self, request_id: str, output_tokens: int = 0) -> None:
        """The request's stream on its worker ended (or never started): its output length, and its
        mean inter-token latency after the first token, when the caller counted its tokens."""
        stream = self._streams.pop(request_id, None)
        if stream is None or stream.first_token_at is None or output_tokens < 1:
            return
        self.osl.labels(*stream.labels).observe(output_tokens)
        if output_tokens > 1:
            itl = (time.monotonic() - stream.first_token_at) / (output_tokens - 1)
            self.itl.labels(*stream.labels).observe(itl)


class _Stream:
    """A routed request between its booking and its end, as the router's metrics follow it."""

    __slots__ = ("labels", "booked_at", "first_token_at")

    def __init__(self, labels: tuple[str, str, str, str], booked_at: float) -> None:
        self.labels = labels
        self.booked_at = booked_at
        self.first_token_at: float | None = None


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
        mode = GaugeMetricFamily(f"{p}_router_mode", "1 for the routing mode in effect per model",
                                 labels=("model", "mode"))
        hit = GaugeMetricFamily(f"{p}_router_kv_hit_rate", "Overlap blocks / prompt blocks of routed requests",
                                labels=("model",))
        routed = CounterMetricFamily(f"{p}_router_requests", "Requests routed", labels=("model",))
        # worker_type (decode or prefill) as Dynamo labels these, beside the model.
        blocks = GaugeMetricFamily(f"{p}_worker_active_decode_blocks", "Active KV blocks booked per worker",
                                   labels=("model", "worker_id", "dp_rank", "worker_type"))
        prefill = GaugeMetricFamily(f"{p}_worker_active_prefill_tokens", "Prompt tokens awaiting prefill per worker",
                                    labels=("model", "worker_id", "dp_rank", "worker_type"))
        tree = GaugeMetricFamily(f"{p}_router_indexed_blocks", "Blocks indexed per worker", labels=("model", "worker_id",
                                                                                                   "dp_rank"))
        queued = GaugeMetricFamily(f"{p}_router_queue_pending_requests", "Requests waiting in the router queue",
                                   labels=("model", "worker_type"))
        events = CounterMetricFamily("dynamo_component_kv_cache_events_applied", "KV events applied by the router",
                                     labels=("event_type", "status"))
        totals: dict[tuple[str, str], int] = {}
        for model, router, effective, pending, worker_type in self._rows():
            queued.add_metric((model, worker_type), pending)
            for m in KvMode:
                mode.add_metric((model, m), 1.0 if m == effective else 0.0)
            stats = router._stats
            hit.add_metric((model,), stats["overlap_blocks"] / stats["prompt_blocks"] if stats["prompt_blocks"] else 0.0)
            routed.add_metric((model,), stats["requests"])
            for (w, r), load in router.active.loads().items():
                blocks.add_metric((model, str(w), str(r), worker_type), load.get("active_blocks", 0))
                prefill.add_metric((model, str(w), str(r), worker_type), load.get("active_prefill_tokens", 0))
            for (w, r), size in router._tree_sizes().items():
                tree.add_metric((model, str(w), str(r)), size)
            for key, n in router.indexer.counts.items():
                totals[key] = totals.get(key, 0) + n
        for (kind, status), n in sorted(totals.items()):
            events.add_metric((kind, status), n)
        resyncs = CounterMetricFamily(f"{p}_router_kv_resyncs", "Worker KV state re-syncs after lost events",
                                      labels=("status",))
        extra = self._counts()
        for status in ("ok", "failed"):
            resyncs.add_metric((status,), extra.get(f"resync_{status}", 0))
        yield from (mode, hit, routed, blocks, prefill, tree, queued, events, resyncs)

"""Dynamo's per-request router series, emitted by every routing policy (kv, round-robin, random, the
load-based ones, direct), as NVIDIA Dynamo 1.6.1's frontend emits them in every `--router-mode`.

`dynamo_component_router_*` keep that prefix whatever --metrics-prefix says and are labelled by the
namespace and component routed to and by the router itself (its instance id in `router_id`, and in
hex in `worker_id`, as Dynamo labels a component's own metrics); `dynamo_router_*` are per router.
A worker endpoint's series exist at 0 once it is known (Prometheus' increase() cannot count a
series' first sample, so series born by a burst would hide that burst from the SLA planner); input
lengths are labelled by model and phase as they come. What only KV routing measures (predicted hit
rate, decision phases, overlap a prefill selection passed by) stays at 0 under the other policies,
as in Dynamo; the shared-cache and KV-transfer-estimate families stay at 0 here (no shared KV cache,
no transfer estimate).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

from dynamo.router.selection import RoutingOverhead

# Bucket bounds as Dynamo 1.6.1's frontend reports them.
_RATE = tuple(round(0.05 * i, 2) for i in range(21))
_TTFT = (0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480)
_ITL = (0, 0.0019, 0.0035, 0.0067, 0.013, 0.024, 0.045, 0.084, 0.16, 0.3, 0.56, 1.1, 2)
_ISL = (0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000)
_OSL = (0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000)
_TRANSFER = (0, 0.0019, 0.0037, 0.0072, 0.014, 0.027, 0.052, 0.1, 0.19, 0.37, 0.72, 1.4, 2.7, 5.2, 10)
_BEYOND = tuple(2**i for i in range(12))
_LOST = (0.25, 0.5) + tuple(2**i for i in range(14))
_HASHING_MS = tuple(0.001 * 2**i for i in range(15))  # CPU-bound phases
_PHASE_MS = tuple(round(0.01 * 3**i, 2) for i in range(17))  # lookup, scheduling, total
# (name, help, buckets) of Dynamo's per-decision overhead histograms: RoutingOverhead's order, then the
# shared-cache query (no shared cache here: never observed).
_OVERHEAD = (
    ("block_hashing", "Time spent computing block hashes in milliseconds", _HASHING_MS),
    ("seq_hashing", "Time spent computing sequence hashes in milliseconds", _HASHING_MS),
    ("indexer_find_matches", "Time spent in indexer find_matches in milliseconds", _PHASE_MS),
    ("scheduling", "Time spent in scheduler worker selection in milliseconds", _PHASE_MS),
    ("total", "Total routing overhead per request in milliseconds", _PHASE_MS),
    ("shared_cache_query", "Time spent querying the shared KV cache in milliseconds", _PHASE_MS),
)
_LABELS = ("dynamo_namespace", "dynamo_component", "router_id", "worker_id")
ROUTER_SERIES = _C = "dynamo_component_router"  # Dynamo's router series are named from here


def phase(prefill_pool: bool, request) -> str:
    """The request's phase as Dynamo labels its input length: prefill, aggregated or decode (the
    decode half of a disaggregated request, which carries its prefill's transfer parameters)."""
    if prefill_pool:
        return "prefill"
    return "aggregated" if request.disaggregated_params is None else "decode"


class RouterRequestMetrics:
    """The router series of one process's routing policy on `registry`; follows each routed request
    from its booking to its end for TTFT, ITL and output length."""

    def __init__(self, registry: CollectorRegistry, router_id: int = 0) -> None:
        def hist(name: str, text: str, buckets, extra: tuple[str, ...] = ()) -> Histogram:
            return Histogram(f"{_C}_{name}", text, _LABELS + extra, buckets=buckets, registry=registry)

        self.requests = Counter(f"{_C}_requests", "Total number of requests processed by the router", _LABELS,
                                registry=registry)
        self.started = Counter(f"{_C}_requests_started", "Total number of requests admitted by the router "
                               "scheduler", _LABELS, registry=registry)
        self.kv_hit_rate = hist("kv_hit_rate", "Predicted KV cache hit rate at routing time (0.0-1.0)", _RATE)
        self.isl = hist("input_sequence_tokens", "Input sequence length in tokens observed at the router", _ISL,
                        ("model", "phase"))
        self.ttft = hist("time_to_first_token_seconds", "Time to first token observed at the router", _TTFT)
        self.itl = hist("inter_token_latency_seconds", "Average inter-token latency observed at the router", _ITL)
        self.osl = hist("output_sequence_tokens", "Output sequence length in tokens observed at the router", _OSL)
        self._zero = (  # families nothing here observes yet: they exist at 0, as in Dynamo without the feature
            hist("kv_transfer_estimated_latency_seconds", "Upper-bound estimation of KV cache transfer latency in "
                 "disaggregated serving (prefill_complete to first_token)", _TRANSFER),
            hist("shared_cache_hit_rate", "Fraction of request blocks found in the shared KV cache (0.0-1.0)", _RATE),
            hist("shared_cache_beyond_blocks", "Shared cache blocks beyond device overlap for the selected worker",
                 _BEYOND),
        )
        self.non_max = Counter(f"{_C}_non_max_overlap_selections", "Total admitted prefill scheduler selections "
                               "with less KV cache overlap than another eligible worker", _LABELS + ("worker_type",),
                               registry=registry)
        self.lost = hist("overlap_blocks_lost", "Difference in effective KV cache overlap between the "
                         "highest-overlap eligible prefill worker and selected worker", _LOST, ("worker_type",))
        self.router_id = str(router_id)
        self._own = format(router_id, "x")
        self._overhead = tuple(  # one series each, labelled by this router as Dynamo labels them
            Histogram(f"dynamo_router_overhead_{name}_ms", text, ("router_id",), buckets=buckets,
                      registry=registry).labels(self.router_id)
            for name, text, buckets in _OVERHEAD)
        Counter("dynamo_router_shared_cache_errors", "Total shared cache failures", ("router_id",),
                registry=registry).labels(self.router_id)
        self._streams: dict[str, _Stream] = {}

    def _labels(self, endpoint) -> tuple[str, str, str, str]:
        return endpoint.namespace, endpoint.component, self.router_id, self._own

    def endpoint_series(self, endpoint) -> None:
        """Create the series of requests routed to `endpoint` (an EndpointId) at 0."""
        labels = self._labels(endpoint)
        for family in (self.requests, self.started, self.kv_hit_rate, self.ttft, self.itl, self.osl, *self._zero):
            family.labels(*labels)
        for family in (self.non_max, self.lost):
            family.labels(*labels, "prefill")

    def routed(self, request_id: str, endpoint, model: str, phase: str, prompt_tokens: int, *,
               cached: tuple[int, int] | None = None, overhead: RoutingOverhead | None = None,
               blocks_lost: int | None = None) -> None:
        """A request booked on a worker of `endpoint`. A KV router adds what it predicted: `cached`, the
        (overlap, prompt) blocks whose share the SLA planner reads as the KV hit rate; what the decision
        cost; for a prefill selection, the cached blocks it passed by on a better-cached eligible worker."""
        labels = self._labels(endpoint)
        self._streams[request_id] = _Stream(labels, time.monotonic())
        self.requests.labels(*labels).inc()
        self.started.labels(*labels).inc()
        self.isl.labels(*labels, model, phase).observe(prompt_tokens)
        if cached is not None and cached[1]:
            self.kv_hit_rate.labels(*labels).observe(min(cached[0] / cached[1], 1.0))
        if overhead is not None:
            for histogram, seconds in zip(self._overhead, overhead):
                histogram.observe(seconds * 1000.0)
        if blocks_lost is not None:
            self.lost.labels(*labels, "prefill").observe(blocks_lost)
            if blocks_lost > 0:
                self.non_max.labels(*labels, "prefill").inc()

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

"""Frontend Prometheus metrics with NVIDIA Dynamo's names (`dynamo_frontend_*`,
prefix configurable with `--metrics-prefix`)."""

from __future__ import annotations

import enum

from dynamo.frontend.stage_metrics import StageMetrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class RequestOutcome(enum.StrEnum):
    """The `status` label of `dynamo_frontend_requests` (Dynamo's values): how a request ended."""

    SUCCESS = "success"
    ERROR = "error"  # refused after admission, failed in the engine, or no worker could finish it
    CANCELLED = "cancelled"  # the client went away (or stopped the stream) first


class FrontendMetrics:
    def __init__(self, prefix: str = "dynamo_frontend", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.prefix = prefix
        r = self.registry
        p = prefix
        self.requests = Counter(f"{p}_requests", "HTTP requests by outcome",
                                ("model", "endpoint", "request_type", "status"), registry=r)
        self.inflight = Gauge(f"{p}_inflight_requests", "Requests being served", ("model",), registry=r)
        # Dynamo's demand metrics (demand.py), what autoscalers scale on; a model scaled to zero shows its
        # held requests here (--wait-for-workers-secs).
        self.started = Counter(f"{p}_requests_started", "Requests accepted by the frontend handler",
                               ("model", "endpoint", "request_type"), registry=r)
        self.active = Gauge(f"{p}_active_requests", "Requests from the handler's entry to the response's end",
                            ("model",), registry=r)
        self.queued = Gauge(f"{p}_queued_requests", "Requests accepted that have no first response yet (waiting "
                            "for a worker, being routed, queued or prefilled)", ("model",), registry=r)
        self.ready = Gauge(f"{p}_model_ready", "1 when the frontend can route a request for the model",
                           ("model",), registry=r)
        self.ttft = Histogram(f"{p}_time_to_first_token_seconds", "Time to first token", ("model",),
                              buckets=_LATENCY, registry=r)
        self.itl = Histogram(f"{p}_inter_token_latency_seconds", "Inter-token latency", ("model",),
                             buckets=_ITL, registry=r)
        self.duration = Histogram(f"{p}_request_duration_seconds", "Request duration", ("model",),
                                  buckets=_LATENCY, registry=r)
        self.isl = Histogram(f"{p}_input_sequence_tokens", "Prompt tokens", ("model",), buckets=_TOKENS,
                             registry=r)
        self.osl = Histogram(f"{p}_output_sequence_tokens", "Completion tokens", ("model",), buckets=_TOKENS,
                             registry=r)
        self.cached = Histogram(f"{p}_cached_tokens", "Prompt tokens served from the prefix cache", ("model",),
                                buckets=_TOKENS, registry=r)
        self.disconnects = Counter(f"{p}_disconnected_clients", "Clients that went away mid-request",
                                   registry=r)
        self.output_tokens = Counter(f"{p}_output_tokens", "Completion tokens sent, counted as they are sent",
                                     ("model",), registry=r)
        self.cancellations = Counter(f"{p}_model_cancellation", "Requests cancelled",
                                     ("model", "endpoint", "request_type"), registry=r)
        self.migrations = Counter(f"{p}_model_migration", "Requests moved to another worker",
                                  ("model", "migration_type"), registry=r)
        self.migration_too_long = Counter(f"{p}_model_migration_max_seq_len_exceeded", "Requests not moved after "
                                          "losing their worker: longer than --migration-max-seq-len", ("model",),
                                          registry=r)
        self.thinking_budgets = Counter(f"{p}_model_thinking_budget_reached", "Requests whose reasoning reached "
                                        "its budget: closed by the frontend, then answered", ("model",), registry=r)
        self.rejections = Counter(f"{p}_model_rejection", "Requests refused (overload, no workers)",
                                  ("model", "reason"), registry=r)
        self.workers = Gauge(f"{p}_model_workers", "Serving workers per model", ("model",), registry=r)
        self.context_length = Gauge(f"{p}_model_context_length", "Model context length", ("model",), registry=r)
        self.block_size = Gauge(f"{p}_model_kv_cache_block_size", "KV block size", ("model",), registry=r)
        self.total_kv_blocks = Gauge(f"{p}_model_total_kv_blocks", "KV blocks across workers", ("model",),
                                     registry=r)
        self.max_num_seqs = Gauge(f"{p}_model_max_num_seqs", "Engine batch limit (sequences) of the model's workers",
                                  ("model",), registry=r)
        self.max_num_batched_tokens = Gauge(f"{p}_model_max_num_batched_tokens", "Engine batch limit (tokens) of "
                                            "the model's workers", ("model",), registry=r)
        self.loop_lag = Histogram(f"{p}_event_loop_lag_seconds", "How late a 10 ms timer fired on the HTTP "
                                  "event loop (time the loop was held)", buckets=_LAG, registry=r)
        self.loop_lag_max = Gauge(f"{p}_event_loop_lag_max_seconds", "Largest event-loop lag since start",
                                  registry=r)
        self.migration_limit = Gauge(f"{p}_model_migration_limit", "Migration limit", ("model",), registry=r)
        # Dynamo's per-worker "last request" gauges: the worker that prefilled a request gets its TTFT and
        # prompt length at the first token, the one that decoded it its mean ITL at the end.
        worker = ("worker_id", "dp_rank", "worker_type")
        self.worker_ttft = Gauge(f"{p}_worker_last_time_to_first_token_seconds", "TTFT of the last request the "
                                 "worker prefilled", worker, registry=r)
        self.worker_isl = Gauge(f"{p}_worker_last_input_sequence_tokens", "Prompt tokens of the last request the "
                                "worker prefilled", worker, registry=r)
        self.worker_itl = Gauge(f"{p}_worker_last_inter_token_latency_seconds", "Mean inter-token latency of the "
                                "last request the worker decoded", worker, registry=r)
        self._worker_series: dict[int, set[tuple[str, str, str]]] = {}  # instance id -> its label sets
        self.stages = StageMetrics(p, r)  # Dynamo's pipeline-stage series (stage_metrics.py)

    def watch_token_cache(self, cache) -> None:
        """The tokenizer cache's figures, read at scrape time (tokenizing pays nothing for them)."""
        self.registry.register(_TokenCacheCollector(self.prefix, cache))

    def model_series(self, model: str) -> None:
        """Create `model`'s request series at 0. Prometheus' increase() cannot count a series' first
        sample, so a counter born at 1 by the first request loses that request (the planner's demand
        under-counted right after start); a series exists from the first exposition after its model
        is registered, before any request to it."""
        for endpoint in ("chat_completions", "completions"):
            for request_type in ("stream", "unary"):
                for status in RequestOutcome:
                    self.requests.labels(model, endpoint, request_type, status)
        for hist in (self.ttft, self.itl, self.duration, self.isl, self.osl):
            hist.labels(model)
        self.output_tokens.labels(model)
        self.inflight.labels(model)
        for gauge in (self.active, self.queued, self.ready):
            gauge.labels(model)
        for endpoint in ("chat_completions", "completions"):
            for request_type in ("stream", "unary"):
                self.started.labels(model, endpoint, request_type)

    def migration(self, model: str, kind: str) -> None:
        self.migrations.labels(model, kind).inc()

    def thinking_budget_spent(self, model: str) -> None:
        self.thinking_budgets.labels(model).inc()

    def first_token_on(self, handle, ttft: float, isl: int) -> None:
        """The worker that prefilled the request (a prefill worker, else the decode worker) saw this TTFT."""
        worker = handle.prefilled_by()
        if worker is None:
            return
        labels = (str(worker[0]), str(worker[1]), worker[2])
        self.worker_ttft.labels(*labels).set(ttft)
        self.worker_isl.labels(*labels).set(isl)
        self._worker_series.setdefault(worker[0], set()).add(labels)

    def decoded_on(self, handle, itl: float) -> None:
        if handle.worker_id is not None:
            labels = (str(handle.worker_id), str(handle.dp_rank), "decode")
            self.worker_itl.labels(*labels).set(itl)
            self._worker_series.setdefault(handle.worker_id, set()).add(labels)

    def keep_workers(self, live: set[int]) -> None:
        """Drop the per-worker series of workers that left: a scaled-down fleet leaves no stale rows."""
        for iid in self._worker_series.keys() - live:
            for labels in self._worker_series.pop(iid):
                for gauge in (self.worker_ttft, self.worker_isl, self.worker_itl):
                    try:
                        gauge.remove(*labels)
                    except KeyError:
                        pass


class _TokenCacheCollector:
    def __init__(self, prefix: str, cache) -> None:
        self.prefix, self.cache = prefix, cache

    def describe(self):
        return []

    def collect(self):
        name = f"{self.prefix}_tokenizer_cache"
        yield CounterMetricFamily(f"{name}_hits", "Prompt pieces whose tokens came from the cache",
                                  value=self.cache.hits)
        yield CounterMetricFamily(f"{name}_misses", "Prompt pieces tokenized (and kept) anew", value=self.cache.misses)
        yield GaugeMetricFamily(f"{name}_bytes", "Bytes the cached pieces take (bounded by --tokenizer-cache-bytes)",
                                value=self.cache.bytes)

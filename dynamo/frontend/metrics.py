"""Frontend Prometheus metrics with NVIDIA Dynamo 1.6.1's names, labels and bucket boundaries
(`dynamo_frontend_*`, prefix configurable with `--metrics-prefix`), and `RequestTally`: one request's
place in `requests_started_total`, `requests_total` and `failures_total`."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from dynamo.frontend.errors import BEYOND_LIMITS, limits_refusal
from dynamo.frontend.stage_metrics import StageMetrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Dynamo 1.6.1's defaults (log-spaced, 2 significant figures), as its frontend's /metrics shows them.
DURATION_BUCKETS = (0, 2, 4, 8, 16, 32, 64, 130, 260, 510)
TTFT_BUCKETS = (0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480)
ITL_BUCKETS = (0, 0.0018, 0.0033, 0.0059, 0.011, 0.02, 0.035, 0.064, 0.12, 0.21, 0.38, 0.69, 1.2, 2.3, 4.1, 7.4, 13,
               24, 44, 80)
ISL_BUCKETS = (0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000)  # cached tokens too
OSL_BUCKETS = (0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Dynamo's `model` label for a model the frontend does not know: a client's made-up names never become series.
UNKNOWN_MODEL = "unknown_model"


class RequestOutcome(enum.StrEnum):
    """How a request ended, as its "request completed" log line says it (`status`). The metrics say a
    cancellation as Dynamo does: `status="error"`, `error_type="cancelled"`."""

    SUCCESS = "success"
    ERROR = "error"  # refused, failed in the engine, or no worker could finish it
    CANCELLED = "cancelled"  # the client went away (or stopped the stream) first


class ErrorType(enum.StrEnum):
    """The `error_type` label of `requests_total` (and of the "request completed" line): Dynamo's values."""

    NONE = ""
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    OVERLOAD = "overload"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    RESPONSE_TIMEOUT = "response_timeout"
    INTERNAL = "internal"
    NOT_IMPLEMENTED = "not_implemented"


_ERROR_TYPES = {404: ErrorType.NOT_FOUND, 429: ErrorType.OVERLOAD, 529: ErrorType.OVERLOAD, 499: ErrorType.CANCELLED,
                501: ErrorType.NOT_IMPLEMENTED, 502: ErrorType.UNAVAILABLE, 503: ErrorType.UNAVAILABLE,
                504: ErrorType.RESPONSE_TIMEOUT}
# `failures_total{class, reason}`. Dynamo 1.6.1 was seen to write the first two and a lost worker's; the
# others follow the vocabulary of its error classes.
_FAILURES = {ErrorType.VALIDATION: ("InvalidRequest", "request.invalid"),
             ErrorType.NOT_FOUND: ("NotFound", "request.not_found"),
             ErrorType.OVERLOAD: ("ResourceExhausted", "capacity.exhausted"),
             ErrorType.UNAVAILABLE: ("Unavailable", "backend.unavailable"),
             ErrorType.RESPONSE_TIMEOUT: ("ResponseTimeout", "backend.response_timeout"),
             ErrorType.NOT_IMPLEMENTED: ("NotImplemented", "runtime.not_implemented"),
             ErrorType.INTERNAL: ("Internal", "runtime.internal")}
_FAILURES_BY_CODE = {"worker_disconnected": ("Unavailable", "transport.disconnected"),
                     "request_too_large": ("PayloadTooLarge", "request.payload_too_large")}


def error_type_of(status: int) -> ErrorType:
    """A refused or failed request's `error_type`, from the HTTP status it was answered with (a 502, a
    worker lost mid-way, is `unavailable` as in Dynamo; any other 4xx is the client's: `validation`)."""
    return _ERROR_TYPES.get(status) or (ErrorType.INTERNAL if status >= 500 else ErrorType.VALIDATION)


class FrontendMetrics:
    def __init__(self, prefix: str = "dynamo_frontend", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.prefix = prefix
        r = self.registry
        p = prefix
        self.requests = Counter(f"{p}_requests", "Total number of LLM requests processed",
                                ("model", "endpoint", "request_type", "status", "error_type"), registry=r)
        self.failures = Counter(f"{p}_failures", "Total number of terminal semantic request failures",
                                ("class", "reason"), registry=r)
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
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(f"{p}_inter_token_latency_seconds", "Inter-token latency", ("model",),
                             buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram(f"{p}_request_duration_seconds", "Request duration", ("model",),
                                  buckets=DURATION_BUCKETS, registry=r)
        self.isl = Histogram(f"{p}_input_sequence_tokens", "Prompt tokens", ("model",), buckets=ISL_BUCKETS,
                             registry=r)
        self.osl = Histogram(f"{p}_output_sequence_tokens", "Completion tokens", ("model",), buckets=OSL_BUCKETS,
                             registry=r)
        self.cached = Histogram(f"{p}_cached_tokens", "Prompt tokens served from the prefix cache", ("model",),
                                buckets=ISL_BUCKETS, registry=r)
        # A gauge, as Dynamo has it, though only ever raised: clients that went away mid-request since start.
        self.disconnects = Gauge(f"{p}_disconnected_clients", "Number of disconnected clients", registry=r)
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
        # A rolling update that changed a model's card (model_generations.py): how often the card served switched,
        # and how many requests prepared for the card left were prepared again for the new one.
        self.card_switches = Counter(f"{p}_model_card_switches", "Times a model's served card switched to another "
                                     "card (a rolling update)", ("model",), registry=r)
        # The superseded attempt is no request of its own (request counts, duration, ISL/OSL: once), but what it
        # already went through is observed as it happened: its preprocessing (template, tokenize) and route stage
        # timings, and, for a unary n>1 request refused after another choice's output, that output's TTFT and ITL.
        self.card_reprepared = Counter(f"{p}_model_card_reprepared", "Requests prepared again because their model's "
                                       "card switched before anything of their answer was sent (counted once in the "
                                       "request metrics; the first attempt's stage timings, and any TTFT/ITL and output "
                                       "tokens of its output, are observed as well)", ("model",), registry=r)
        # A rolling update that started new workers in a new namespace beside the old ones (worker_sets.py): the
        # requests each set got while the model had several. Series of sets that are gone are removed.
        self.worker_set_requests = Counter(f"{p}_worker_set_requests", "Requests routed to each worker set (namespace) "
                                           "of a model whose workers span several", ("model", "namespace"), registry=r)
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
                for error_type in _SERIES_AT_ZERO:
                    self.requests.labels(model, endpoint, request_type, _status(error_type), error_type)
        for hist in (self.ttft, self.itl, self.duration, self.isl, self.osl):
            hist.labels(model)
        self.output_tokens.labels(model)
        self.inflight.labels(model)
        for gauge in (self.active, self.queued, self.ready):
            gauge.labels(model)
        for endpoint in ("chat_completions", "completions"):
            for request_type in ("stream", "unary"):
                self.started.labels(model, endpoint, request_type)

    def tally(self, model: str, endpoint: str, request_type: str, known: bool = True,
              count_started: bool = True) -> "RequestTally":
        """A request's tally, under `model` or, for a model the frontend does not know, `unknown_model`.
        `count_started` False: the caller counted it in `requests_started_total` already (demand.Arrival
        does for a known model)."""
        return RequestTally(self, model if known else UNKNOWN_MODEL, endpoint, request_type,
                            count_started or not known)

    def failed(self, error_type: ErrorType, code: str | None = None) -> None:
        """One failure in `failures_total` (cancellations are not failures); also for a request refused
        before it had a tally (a body that is not JSON, one over the size limit)."""
        failure = _FAILURES_BY_CODE.get(code or "") or _FAILURES.get(error_type)
        if failure is not None:
            self.failures.labels(*failure).inc()

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


# The `requests_total` series each served model has from the start (model_series), besides success.
_SERIES_AT_ZERO = (ErrorType.NONE, ErrorType.VALIDATION, ErrorType.OVERLOAD, ErrorType.UNAVAILABLE,
                   ErrorType.CANCELLED, ErrorType.RESPONSE_TIMEOUT, ErrorType.INTERNAL)


def _status(error_type: ErrorType) -> str:
    return RequestOutcome.SUCCESS if error_type is ErrorType.NONE else RequestOutcome.ERROR


class RequestTally:
    """One request in `requests_started_total` (from its creation, once its model, endpoint and request type
    are known) and in `requests_total` (once, at `close`), as Dynamo's request guard counts them: an error
    of type `internal` unless the handler reported how it ended first. A failure (neither a success nor a
    cancellation) is also one in `failures_total`."""

    __slots__ = ("metrics", "labels", "error_type", "code", "closed")

    def __init__(self, metrics: FrontendMetrics, model: str, endpoint: str, request_type: str,
                 count_started: bool = True) -> None:
        self.metrics, self.labels = metrics, (model, endpoint, request_type)
        self.error_type, self.code, self.closed = ErrorType.INTERNAL, None, False
        if count_started:
            metrics.started.labels(*self.labels).inc()

    def ended(self, outcome: RequestOutcome, error: Any = None) -> None:
        """How it ended; for an error, the HTTP error (`status`, `code`: an `errors.ApiError`) it was answered
        with, or, for a stream that had sent its 200, ended with as its error event; none: `internal`."""
        if outcome == RequestOutcome.SUCCESS:
            self.error_type = ErrorType.NONE
        elif outcome == RequestOutcome.CANCELLED:
            self.error_type = ErrorType.CANCELLED
        elif error is not None:
            self.error_type, self.code = error_type_of(error.status), error.code

    def __enter__(self) -> "RequestTally":
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        """Counts it, also when the block raised: an HTTP error as what it says, a cancelled task or a client
        that left (ConnectionError: it hung up while its request waited) as a cancellation, a body beyond the
        parsers' limits as the error `errors.beyond_limits` answers it with, anything else as `internal`."""
        if isinstance(exc, (asyncio.CancelledError, ConnectionError)):
            self.ended(RequestOutcome.CANCELLED)
        elif isinstance(getattr(exc, "status", None), int):
            self.ended(RequestOutcome.ERROR, exc)
        elif isinstance(exc, BEYOND_LIMITS):
            self.ended(RequestOutcome.ERROR, limits_refusal(exc))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.metrics.requests.labels(*self.labels, _status(self.error_type), self.error_type).inc()
        if self.error_type not in (ErrorType.NONE, ErrorType.CANCELLED):
            self.metrics.failed(self.error_type, self.code)


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

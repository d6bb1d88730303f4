"""NVIDIA Dynamo's frontend pipeline-stage metrics, with its names, labels and buckets (as its 1.6.1
frontend exposes them), for the dashboards written against them:
- `dynamo_frontend_stage_requests{stage, phase}`: requests in a stage now: `preprocess` (phase ""; the
  chat template and tokenization), `route` (choosing a worker) and `dispatch` (sent to a worker, its
  first response not yet back), with phase `aggregated`, or `prefill` / `decode` when disaggregated;
- `dynamo_frontend_stage_duration_seconds{stage}`: how long `preprocess` and `route` took, and
  `transport_roundtrip` (a worker request sent to its first response back);
- `dynamo_frontend_template_seconds`, `dynamo_frontend_tokenize_seconds`: the two halves of preprocess
  (Dynamo observes them for chat prompts; here a completion's text prompt's tokenizer time counts too);
- `dynamo_frontend_tokenizer_latency_ms{operation="tokenize"}`: the tokenizer's time again in ms, as
  Dynamo reports it beside the others.
The frontend's components report here; this module owns no other state."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram

STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5)
TEMPLATE_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05)
TOKENIZE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1)
TOKENIZER_MS_BUCKETS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

AGGREGATED, PREFILL, DECODE = "aggregated", "prefill", "decode"


class StageMetrics:
    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        p, r = prefix, registry
        self.requests = Gauge(f"{p}_stage_requests", "Number of requests currently in the given pipeline stage",
                              ("stage", "phase"), registry=r)
        self.duration = Histogram(f"{p}_stage_duration_seconds", "Pipeline stage duration (seconds)", ("stage",),
                                  buckets=STAGE_BUCKETS, registry=r)
        self.template = Histogram(f"{p}_template_seconds", "Template application time in preprocessor (seconds)",
                                  buckets=TEMPLATE_BUCKETS, registry=r)
        self.tokenize = Histogram(f"{p}_tokenize_seconds", "Tokenization time in preprocessor (seconds)",
                                  buckets=TOKENIZE_BUCKETS, registry=r)
        self.tokenizer_ms = Histogram(f"{p}_tokenizer_latency_ms", "Tokenizer latency in milliseconds",
                                      ("operation",), buckets=TOKENIZER_MS_BUCKETS, registry=r)
        for stage, phase in (("preprocess", ""), ("route", AGGREGATED), ("dispatch", AGGREGATED)):
            self.requests.labels(stage, phase)  # at 0 from the start, as Dynamo shows them

    @contextmanager
    def stage(self, stage: str, phase: str = "") -> Iterator[None]:
        """A request in `stage` for the block's length (its duration observed for preprocess and route)."""
        gauge = self.requests.labels(stage, phase)
        gauge.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            gauge.dec()
            if stage != "dispatch":
                self.duration.labels(stage).observe(time.perf_counter() - started)

    def dispatched(self, phase: str) -> "Dispatched":
        return Dispatched(self, phase)

    def prep(self, kind: str, seconds: float) -> None:
        """The preprocessor's own timings (ModelPipeline.observe): "template" or "tokenize"."""
        if kind == "template":
            self.template.observe(seconds)
        elif kind == "tokenize":
            self.tokenize.observe(seconds)
            self.tokenizer_ms.labels("tokenize").observe(seconds * 1000)


class Dispatched:
    """One worker request from being sent to its first response: `dispatch` in the gauge meanwhile, then
    its `transport_roundtrip`. `first()` and `close()` are idempotent (a stream ends however it ends)."""

    __slots__ = ("metrics", "gauge", "started", "open")

    def __init__(self, metrics: StageMetrics, phase: str) -> None:
        self.metrics = metrics
        self.gauge = metrics.requests.labels("dispatch", phase)
        self.gauge.inc()
        self.started = time.perf_counter()
        self.open = True

    def first(self) -> None:
        if self.open:
            self.open = False
            self.gauge.dec()
            self.metrics.duration.labels("transport_roundtrip").observe(time.perf_counter() - self.started)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.gauge.dec()

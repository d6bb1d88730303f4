"""The `vllm:*` engine series NVIDIA Dynamo 1.6.1's mocker puts on its worker's `/metrics` (its names, help,
`{engine, model_name}` labels and vLLM's buckets), so dashboards and autoscalers written against a vLLM
worker read a mocker the same way: the scheduler's state at scrape time (`num_requests_running`,
`num_requests_waiting`, `kv_cache_usage_perc` and its `gpu_cache_usage_perc` alias, `num_preemptions_total`)
and per-request latencies (`time_to_first_token_seconds`, `inter_token_latency_seconds`,
`e2e_request_latency_seconds`). The `dynamo_mocker_*` series stay beside them."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160,
                640, 2560)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680)
LABELS = ("engine", "model_name")


class VllmMetrics:
    """`engine`: the mocker (its `num_running`, `num_waiting`, `num_preemptions` and `metrics()`), read at scrape."""

    def __init__(self, registry: CollectorRegistry, engine, model_name: str, dp_rank: int = 0) -> None:
        self.labels = (str(dp_rank), model_name)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              LABELS, buckets=TTFT_BUCKETS, registry=registry).labels(*self.labels)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             LABELS, buckets=ITL_BUCKETS, registry=registry).labels(*self.labels)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             LABELS, buckets=E2E_BUCKETS, registry=registry).labels(*self.labels)
        registry.register(_SchedulerState(engine, self.labels))

    def tokens(self, count: int, gap: float) -> None:
        """`count` tokens `gap` seconds after the previous ones: one observation each, the gap split over them."""
        for _ in range(count):
            self.itl.observe(gap / count)


class _SchedulerState:
    def __init__(self, engine, labels: tuple[str, str]) -> None:
        self.engine, self.labels = engine, labels

    def collect(self) -> Iterator[Metric]:
        engine, labels = self.engine, self.labels
        usage = engine.metrics().gpu_cache_usage_perc
        for name, doc, value in (
                ("vllm:num_requests_running", "Number of requests currently running on GPU.", engine.num_running),
                ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", engine.num_waiting),
                ("vllm:kv_cache_usage_perc", "KV-cache usage as a fraction of available cache blocks.", usage),
                ("vllm:gpu_cache_usage_perc", "Compatibility alias for KV-cache usage as a fraction of available "
                                              "cache blocks.", usage)):
            family = GaugeMetricFamily(name, doc, labels=LABELS)
            family.add_metric(labels, value)
            yield family
        preemptions = CounterMetricFamily("vllm:num_preemptions", "Cumulative number of request preemptions.",
                                          labels=LABELS)
        preemptions.add_metric(labels, engine.num_preemptions)
        yield preemptions

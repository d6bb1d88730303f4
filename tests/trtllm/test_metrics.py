"""TensorRT-LLM's series as the worker serves them (trtllm/metrics.py): named `trtllm_*` whether the
release names them so (newer) or leaves them bare (1.1); a failing collector never fails a request."""

from __future__ import annotations

import types

from prometheus_client import Counter, Histogram

from dynamo.trtllm.metrics import TrtllmSeries, new_collector, record_finished


class Collector:
    """A collector holding one bare-named and one prefixed series (registered nowhere)."""

    def __init__(self) -> None:
        self.bare = Histogram("time_to_first_token_seconds", "TTFT", ["model_name"], buckets=(0.1,), registry=None)
        self.named = Counter("trtllm_prompt_tokens_total", "Prompt tokens", ["model_name"], registry=None)
        self.not_a_series = "labels"

    def log_metrics_dict(self, metrics: dict) -> None:
        self.bare.labels("m").observe(metrics["ttft"])
        self.named.labels("m").inc(metrics["prompt_tokens"])


def samples(collector) -> dict[str, float]:
    return {s.name: s.value for family in TrtllmSeries(collector).collect() for s in family.samples}


def test_every_series_is_named_trtllm_whatever_the_release_calls_it():
    collector = Collector()
    record_finished(collector, types.SimpleNamespace(metrics_dict={"ttft": 0.05, "prompt_tokens": 12}))
    served = samples(collector)
    assert served["trtllm_time_to_first_token_seconds_count"] == 1
    assert served["trtllm_time_to_first_token_seconds_bucket"] == 1
    assert served["trtllm_prompt_tokens_total"] == 12
    assert all(name.startswith("trtllm_") for name in served)


def test_a_collector_that_fails_or_an_output_without_metrics_records_nothing():
    collector = Collector()
    record_finished(collector, types.SimpleNamespace(metrics_dict={}))  # no metrics: not recorded
    record_finished(collector, types.SimpleNamespace(metrics_dict={"ttft": 0.05}))  # KeyError inside: warned
    record_finished(None, types.SimpleNamespace(metrics_dict={"ttft": 0.05, "prompt_tokens": 1}))
    assert samples(collector)["trtllm_prompt_tokens_total"] == 0


def test_a_release_without_a_collector_serves_none():
    assert new_collector(types.SimpleNamespace(), "m") is None

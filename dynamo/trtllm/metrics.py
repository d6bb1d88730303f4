"""TensorRT-LLM's own Prometheus series (`trtllm_*`), as the worker's `/metrics` re-serves them with
NVIDIA Dynamo's labels (the harness's `EngineMetrics`), for dashboards built on those names.

TensorRT-LLM's `MetricsCollector(labels)` (`tensorrt_llm.metrics.collector`) makes the series and
records a finished request from its `metrics_dict` (the LLM runs with `return_perf_metrics`). Newer
releases name them `trtllm_*` themselves; older ones (1.1) leave the names bare and Dynamo adds the
prefix, as this does. Only the collector's own series are served: its labels are `model_name` and
`engine_type`, its counters and histograms those of TensorRT-LLM's release."""

from __future__ import annotations

import logging
from typing import Any, Iterator

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

PREFIX = "trtllm_"
ENGINE_METRIC_PREFIXES = (PREFIX,)


def new_collector(api: Any, model_name: str) -> Any | None:
    """TensorRT-LLM's collector for this worker's series; None (with a warning) where the installed
    TensorRT-LLM has none."""
    factory = getattr(api, "MetricsCollector", None)
    if factory is None:
        log.warning("this TensorRT-LLM has no MetricsCollector: its trtllm_* series are not served")
        return None
    return factory({"model_name": model_name, "engine_type": "trtllm"})


def record_finished(collector: Any | None, output: Any) -> None:
    """Record a finished request's performance metrics (`output.metrics_dict`) in the collector."""
    metrics = getattr(output, "metrics_dict", None)
    if collector is None or not metrics:
        return
    record = getattr(collector, "log_request_metrics_dict", None) or collector.log_metrics_dict
    try:
        record(metrics)
    except Exception as exc:  # the engine's bookkeeping must not fail the request it measured
        log.warning("TensorRT-LLM metrics not recorded: %s", exc)


class TrtllmSeries:
    """A collector over the series `collector` made, each named `trtllm_*`."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        for value in list(vars(self.collector).values()):
            if isinstance(value, MetricWrapperBase):
                for family in value.collect():
                    yield family if family.name.startswith(PREFIX) else _prefixed(family)


def _prefixed(family: Metric) -> Metric:
    out = Metric(PREFIX + family.name, family.documentation, family.type, family.unit)
    out.samples = [s._replace(name=PREFIX + s.name) for s in family.samples]
    return out

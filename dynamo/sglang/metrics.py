"""SGLang's own Prometheus series (`sglang:*`), as the worker's `/metrics` re-serves them with
NVIDIA Dynamo's labels (the harness's `EngineMetrics`), for dashboards built on SGLang's names.

With `--enable-metrics` SGLang points PROMETHEUS_MULTIPROC_DIR at a folder of its own before it
starts its scheduler processes, whose series (running requests, token usage, cache hits, queue)
are in that folder's files. Its tokenizer manager runs in this process, whose prometheus_client
started before the variable was set (single-process mode), so the request series (TTFT, ITL,
end-to-end latency, prompt and generation tokens) are in the global registry. A scrape reads
both; a family found in the files wins over one of the same name here."""

from __future__ import annotations

import os
from typing import Iterator

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

ENGINE_METRIC_PREFIXES = ("sglang:",)
# Set by SGLang in this process's environment once its engine starts (its IPC, not a setting of ours).
MULTIPROC_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


class SglangSeries:
    """A collector over SGLang's series: the scheduler processes' files in `folder` (None: none)
    and this process's global registry."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder

    @classmethod
    def of_engine(cls) -> "SglangSeries":
        """The series of the engine started in this process."""
        return cls(os.environ.get(MULTIPROC_DIR_VAR) or None)

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        if self.folder and os.path.isdir(self.folder):
            for family in MultiProcessCollector(None, path=self.folder).collect():
                seen.add(family.name)
                yield family
        for family in REGISTRY.collect():
            if family.name.startswith(ENGINE_METRIC_PREFIXES) and family.name not in seen:
                yield family

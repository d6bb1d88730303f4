"""Helpers shared by the planner's end-to-end tests and `benchmarks/planner_ramp.py`."""

from __future__ import annotations

import re
from pathlib import Path


def deploy_kv_dir(log_path: Path) -> str:
    """The private file discovery store of a `python -m dynamo.deploy run`, from the state dir
    its first line names (`...; control URL; state DIR; ...`)."""
    for line in log_path.read_text().splitlines():
        if "; state " in line:
            return str(Path(line.split("; state ", 1)[1].split(";", 1)[0].strip()) / "kv")
    raise RuntimeError("deploy run did not print its state dir")


_LOAD_SCALE = re.compile(r"planner decision \[load\] (\w+) (\d+) -> (\d+) \(applied\): [^\[\n]*\[([^\]\n]*)\]")


def scale_ups_on_partial_fpms(planner_log: str) -> list[str]:
    """The load-loop scale-ups in a planner log decided on fewer (or more) engines' FPMs than the pool had
    replicas: each decision line lists one value per engine (`latency decode load [0.45, 0.52]`, `sla decode:
    est ITL [27.3] ms`). Dynamo skips such a tick (`worker_count_mismatch`); dp-rank engines are not used
    by these graphs."""
    bad = []
    for m in _LOAD_SCALE.finditer(planner_log):
        before, after, values = int(m[2]), int(m[3]), [v for v in m[4].split(",") if v.strip()]
        if after > before and len(values) != before:
            bad.append(m[0])
    return bad

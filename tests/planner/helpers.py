"""Helpers shared by the planner's end-to-end tests and `benchmarks/planner_ramp.py`."""

from __future__ import annotations

from pathlib import Path


def deploy_kv_dir(log_path: Path) -> str:
    """The private file discovery store of a `python -m dynamo.deploy run`, from the state dir
    its first line names (`...; control URL; state DIR; ...`)."""
    for line in log_path.read_text().splitlines():
        if "; state " in line:
            return str(Path(line.split("; state ", 1)[1].split(";", 1)[0].strip()) / "kv")
    raise RuntimeError("deploy run did not print its state dir")

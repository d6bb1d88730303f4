"""The request's lifecycle, live on stderr and in `profiler_status.yaml` (Dynamo's file, with the
DGDR phases added): Pending → Profiling → Ready → Deploying → Deployed, or Failed. The spec is
frozen once profiling starts: the same output dir with a different spec is refused."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import yaml

STATUS_FILE = "profiler_status.yaml"
RUN_STATUS = {"Pending": "running", "Profiling": "running", "Ready": "success", "Deploying": "success",
              "Deployed": "success", "Failed": "failed"}


class SpecChanged(RuntimeError):
    pass


class Status:
    def __init__(self, out_dir: Path, name: str, digest: str) -> None:
        self.path = out_dir / STATUS_FILE
        self.name = name
        self.data: dict[str, Any] = {"dgdr": name, "specDigest": digest, "phase": "Pending", "profilingPhase": None,
                                     "status": "running", "message": "", "error": None, "outputs": {}}

    def previous(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        data = yaml.safe_load(self.path.read_text()) or {}
        return data if isinstance(data, dict) else None

    def claim(self) -> dict[str, Any] | None:
        """Refuse a changed spec once profiling has started here; the previous record otherwise."""
        prev = self.previous()
        if prev and prev.get("phase") not in (None, "Pending") and prev.get("specDigest") != self.data["specDigest"]:
            raise SpecChanged(f"{self.path}: the spec of DGDR {prev.get('dgdr')!r} is immutable once profiling "
                              "starts (it changed); use a new --output-dir or a new request name")
        return prev

    def set(self, phase: str | None = None, profiling: str | None = None, message: str | None = None,
            **extra: Any) -> None:
        if phase:
            self.data["phase"] = phase
            self.data["status"] = RUN_STATUS[phase]
        if profiling:
            self.data["profilingPhase"] = profiling
        if message is not None:
            self.data["message"] = message
        self.data.update(extra)
        self.data["timestamp"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.data, sort_keys=False))
        tmp.replace(self.path)
        where = f"{self.data['phase']}" + (f"/{self.data['profilingPhase']}" if self.data["phase"] == "Profiling"
                                           and self.data["profilingPhase"] else "")
        print(f"[dgdr {self.name}] {where}: {self.data['message']}", file=sys.stderr, flush=True)

    def fail(self, error: str) -> None:
        self.set("Failed", message=headline(error), error=error)


def headline(error: str) -> str:
    """The status message (and console line) of a failure: its first line, completed where it ends on a
    colon (`dynamo.deploy run exited (2):`, `generated DGD does not validate:`) by the line below that
    names the cause (the first `error: ...` one, else the last), so the reason is on the console too."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "failed"
    first, rest = lines[0], lines[1:]
    if not first.endswith(":") or not rest:
        return first
    cause = next((line for line in rest if re.search(r"(^|: )error: ", line, re.IGNORECASE)), rest[-1])
    return f"{first} {cause}"

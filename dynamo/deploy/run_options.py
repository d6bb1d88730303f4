"""What `python -m dynamo.deploy run` is told besides the manifest: its options (`RunOptions`, read by the
service plans) and the parsing of its repeated `SERVICE=...` / `PVC=DIR` flags."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field


@dataclass
class RunOptions:
    frontend_port: int = 8000
    model: str | None = None
    namespace: str | None = None
    state_dir: str = ""
    append_args: dict[str, list[str]] = field(default_factory=dict)  # service -> extra flags
    volumes: dict[str, str] = field(default_factory=dict)  # PVC name -> local directory
    pods_dir: str = ""  # per-replica private /tmp dirs (default: STATE/pods); short: unix socket paths live there
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    control_url: str = ""  # the control endpoint, for planner components (set once it listens)
    prometheus_endpoint: str | None = None  # --prometheus-endpoint; None: $PROMETHEUS_ENDPOINT, else none
    config_maps: dict[str, dict[str, bytes]] = field(default_factory=dict)  # the file's ConfigMaps: name -> files
    control_urls: dict[str, str] = field(default_factory=dict)  # every graph of the file -> its control endpoint
    engine: str | None = None  # --engine: "mocker" runs the engine workers (vLLM, SGLang, TRT-LLM) on the mocker


def parse_append_args(items: list[str]) -> dict[str, list[str]]:
    """`--append-args SERVICE=ARGS`, repeated: each service's extra flags, split as a shell would."""
    out: dict[str, list[str]] = {}
    for item in items:
        svc, sep, text = item.partition("=")
        if not sep or not svc:
            raise ValueError(f"--append-args expects SERVICE=ARGS, got {item!r}")
        out.setdefault(svc, []).extend(shlex.split(text))
    return out


def parse_volumes(items: list[str]) -> dict[str, str]:
    """`--volume PVC=DIR`, repeated: each claim's local directory (which must exist)."""
    out: dict[str, str] = {}
    for item in items:
        pvc, sep, path = item.partition("=")
        if not sep or not pvc or not path:
            raise ValueError(f"--volume expects PVC=DIR, got {item!r}")
        if not os.path.isdir(path):
            raise ValueError(f"--volume {item}: {path} is not a directory")
        out[pvc] = os.path.abspath(path)
    return out


def parse_overrides(items: list[str]) -> dict[str, int]:
    """`--set SERVICE.replicas=N`, repeated: replica counts that override the manifest's."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        svc, dot, attr = key.rpartition(".")
        if not sep or not dot or attr != "replicas" or not value.strip().isdigit():
            raise ValueError(f"--set expects SERVICE.replicas=N, got {item!r}")
        out[svc] = int(value)
    return out

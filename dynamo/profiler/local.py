"""A DGD deployed on this machine through `python -m dynamo.deploy run` (the same code a user
runs), owned by the profiler: started, waited for, measured against, and always torn down: by the
profiler on the way out (a signal cancels it, `stop` runs), and by the kernel when the profiler dies
without a way out (SIGKILL, a crash): `run` is started with PR_SET_PDEATHSIG, and stops its replicas on
the SIGTERM that brings."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from dynamo.runtime.net import free_port

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 40.0
PR_SET_PDEATHSIG = 1
@functools.cache
def _libc():
    """The C library for prctl on Linux (glibc, else whatever `find_library` names: musl); None elsewhere or
    when it cannot be loaded. Loaded on first use, never at import (find_library may run ldconfig)."""
    if sys.platform != "linux":
        return None
    for name in ("libc.so.6", None):
        try:
            return ctypes.CDLL(name or ctypes.util.find_library("c"), use_errno=True)
        except (OSError, TypeError):
            continue
    return None


def _stop_with(parent: int):
    """preexec_fn: SIGTERM this child when `parent` dies (it may already have, between fork and here).
    The library is loaded here, in the parent: between fork and exec only a plain call is safe."""
    libc = _libc()

    def arm() -> None:
        with contextlib.suppress(Exception):
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)
    return arm


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


class LocalDeployment:
    """`async with LocalDeployment(dgd, work, model_dir) as dep:` → frontend at `dep.url`."""

    def __init__(self, dgd: dict[str, Any], work: Path, model_dir: str | None, served_model: str,
                 append_args: dict[str, list[str]] | None = None, ready_timeout: float = READY_TIMEOUT_S,
                 python: str | None = None, beside: list[dict[str, Any]] | None = None) -> None:
        self.dgd, self.work, self.model_dir, self.served_model = dgd, work, model_dir, served_model
        self.beside = beside or []  # documents of the same file (the profile-data ConfigMap the DGD mounts)
        self.append_args = append_args or {}
        self.ready_timeout = ready_timeout
        self.python = python or sys.executable  # the engines' environment (e.g. a vLLM venv)
        self.port = free_port()
        self.control_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, manifest: Path) -> list[str]:
        cmd = [self.python, "-m", "dynamo.deploy", "run", str(manifest), "--frontend-port", str(self.port),
               "--control-port", str(self.control_port), "--log-dir", str(self.work / "logs"), "--grace", "10",
               "--no-status"]
        if self.model_dir:
            cmd += ["--model", self.model_dir]
        for svc, args in self.append_args.items():
            cmd += ["--append-args", f"{svc}={' '.join(args)}"]
        return cmd

    def log_tail(self, chars: int = 4000) -> str:
        path = self.work / "deploy-run.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    async def __aenter__(self) -> "LocalDeployment":
        self.work.mkdir(parents=True, exist_ok=True)
        manifest = self.work / "dgd.yaml"
        manifest.write_text(yaml.safe_dump_all([*self.beside, self.dgd], sort_keys=False))
        self._log = open(self.work / "deploy-run.log", "wb")
        # Its own session, so a terminal's Ctrl-C reaches the profiler, which stops it in order.
        self.proc = subprocess.Popen(self.command(manifest), stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                     preexec_fn=_stop_with(os.getpid()) if _libc() is not None else None)
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _workers(self) -> int:
        services = self.dgd["spec"]["services"]
        return sum(s.get("replicas", 1) for s in services.values() if s.get("componentType") == "worker")

    def _ready(self) -> bool:
        status = _get(f"http://127.0.0.1:{self.control_port}/status")
        if not status["replicas"] or any(r["state"] != "ready" for r in status["replicas"]):
            return False
        health = _get(self.url + "/health")
        seen = sum(1 for i in health.get("instances", []) if i.get("model") == self.served_model)
        return seen >= 1 and all(r["state"] == "ready" for r in status["replicas"])

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dynamo.deploy run exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if await asyncio.to_thread(self._ready):
                    return
            except (OSError, ValueError, KeyError):
                pass  # not listening yet
            await asyncio.sleep(0.5)
        raise TimeoutError(f"deployment not ready within {self.ready_timeout:.0f}s:\n{self.log_tail()}")

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # `run` stops every replica group, then exits
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        if self._log:
            self._log.close()
            self._log = None

"""A DGD deployed on this machine through `python -m dynamo.deploy run` (the same code a user
runs), owned by the profiler: started, waited for, measured against, and always torn down: by the
profiler on the way out (a signal cancels it, `stop` runs), and by the kernel when the profiler dies
without a way out (SIGKILL, a crash): `run` is started with PR_SET_PDEATHSIG, and stops its replicas on
the SIGTERM that brings. A candidate's `run` is quiet (its output goes to `deploy-run.log`); the DGD
`dynamo.deploy run DGDR.yaml` applies takes the user's `run` flags and shows its output on the console
too (`console`)."""

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
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from dynamo.runtime.net import free_port

READY_TIMEOUT_S = 300.0
STOP_MARGIN_S = 25.0  # beyond `run`'s --grace: its replicas get SIGKILL after grace, then it exits
CANDIDATE_GRACE = "10"
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


def _tee(source, log) -> None:
    """`run`'s output, line by line, to this process's stdout and to its log file."""
    for line in iter(source.readline, b""):
        with contextlib.suppress(OSError, ValueError):  # a closed stdout (or log) must not end the copy
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        with contextlib.suppress(OSError, ValueError):
            log.write(line)
            log.flush()
    source.close()


class LocalDeployment:
    """`async with LocalDeployment(dgd, work, model_dir) as dep:` → frontend at `dep.url`."""

    def __init__(self, dgd: dict[str, Any], work: Path, model_dir: str | None, served_model: str,
                 append_args: dict[str, list[str]] | None = None, ready_timeout: float = READY_TIMEOUT_S,
                 python: str | None = None, beside: list[dict[str, Any]] | None = None,
                 run_flags: list[str] | None = None, control_port: int = 0, console: bool = False) -> None:
        """`run_flags`: the `run` flags besides ports and --model (a candidate's when None: quiet, logs under
        `work/logs`, a short grace); `control_port` 0 picks a free one; `console`: `run`'s output is also
        written to this process's stdout."""
        self.dgd, self.work, self.model_dir, self.served_model = dgd, work, model_dir, served_model
        self.beside = beside or []  # documents of the same file (the ConfigMaps the DGD mounts)
        self.append_args = append_args or {}
        self.ready_timeout = ready_timeout
        self.python = python or sys.executable  # the engines' environment (e.g. a vLLM venv)
        self.run_flags = run_flags if run_flags is not None else [
            "--log-dir", str(work / "logs"), "--grace", CANDIDATE_GRACE, "--no-status"]
        self.console = console
        self.port = free_port()
        self.control_port = control_port or free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._pump: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def stop_timeout(self) -> float:
        flags = self.run_flags
        grace = float(flags[flags.index("--grace") + 1]) if "--grace" in flags[:-1] else 15.0  # run's default
        return grace + STOP_MARGIN_S

    def command(self, manifest: Path) -> list[str]:
        cmd = [self.python, "-m", "dynamo.deploy", "run", str(manifest), "--frontend-port", str(self.port),
               "--control-port", str(self.control_port), *self.run_flags]
        if self.model_dir:
            cmd += ["--model", self.model_dir]
        for svc, args in self.append_args.items():
            cmd += ["--append-args", f"{svc}={' '.join(args)}"]
        return cmd

    def log_tail(self, chars: int = 4000) -> str:
        path = self.work / "deploy-run.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    async def __aenter__(self) -> "LocalDeployment":
        return await self.start()

    async def start(self) -> "LocalDeployment":
        """Start `run` and wait until every replica is ready and the frontend lists the model; on any failure
        (`run` exiting, the timeout, a cancel) it is stopped before the error propagates."""
        self.work.mkdir(parents=True, exist_ok=True)
        manifest = self.work / "dgd.yaml"
        manifest.write_text(yaml.safe_dump_all([*self.beside, self.dgd], sort_keys=False))
        self._log = open(self.work / "deploy-run.log", "wb")
        # Its own session, so a terminal's Ctrl-C reaches the profiler, which stops it in order.
        self.proc = subprocess.Popen(self.command(manifest), stdout=subprocess.PIPE if self.console else self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     start_new_session=True,
                                     preexec_fn=_stop_with(os.getpid()) if _libc() is not None else None)
        if self.console:
            self._pump = threading.Thread(target=_tee, args=(self.proc.stdout, self._log), daemon=True,
                                          name="deploy-run-output")
            self._pump.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _ready(self) -> bool:
        # a replica being retired (scaled down: it drains, then goes) is no longer part of what must be up
        replicas = [r for r in _get(f"http://127.0.0.1:{self.control_port}/status")["replicas"]
                    if r["state"] != "stopping"]
        if not replicas or any(r["state"] != "ready" for r in replicas):
            return False
        health = _get(self.url + "/health")
        return any(i.get("model") == self.served_model for i in health.get("instances", []))

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

    async def serve_until(self, stop: asyncio.Event) -> int | None:
        """Wait for `stop` (None) or for `run` to exit on its own (its exit code)."""
        while not stop.is_set():
            if self.proc is None or self.proc.poll() is not None:
                return self.proc.returncode if self.proc is not None else 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return None

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # `run` stops every replica group, then exits
            deadline = time.monotonic() + self.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        if self._pump is not None:  # the rest of `run`'s output (replicas hold no copy of the pipe for long)
            await asyncio.to_thread(self._pump.join, 5)
            self._pump = None
        if self._log:
            self._log.close()
            self._log = None

"""A `python -m dynamo.deploy run` child for end-to-end tests: start, wait for replicas,
read per-replica metrics, scale, stop, and check that no replica process survives."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import yaml

from tests.fixtures.procs import REPO, free_port, http_get, metric_value, wait_until

if TYPE_CHECKING:
    from dynamo.deploy.supervisor import Supervisor


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def chat(port: int, model: str, text: str, max_tokens: int = 4, timeout: float = 30) -> dict:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": max_tokens}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def started_run(tmp: Path, doc: dict, model_dir: Path, ready: dict[str, int], model: str,
                *args: str) -> Iterator["DeployRun"]:
    """A module fixture's body: `run` of the graph `doc` (written to `tmp`) on `model_dir`, ready with `ready`
    replicas and `ready`'s worker count serving `model`; stopped at teardown, no replica process left over."""
    path = tmp / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    deploy = DeployRun(path, tmp, "--model", str(model_dir), "--no-status", *args)
    deploy.manifest_dir = tmp
    try:
        deploy.wait_ready(ready, timeout=120)
        deploy.wait_workers(model, sum(n for name, n in ready.items() if name != "Frontend"))
        yield deploy
    finally:
        deploy.stop()
        assert deploy.survivors() == []


class DeployRun:
    def __init__(self, manifest: str | Path, tmp: Path, *args: str, python: str = sys.executable,
                 env: dict | None = None, control_port: int | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.control_port = control_port or free_port()
        self.log_path = tmp / f"run-{Path(manifest).stem}.log"
        self._log = open(self.log_path, "wb")
        argv = [python, "-m", "dynamo.deploy", "run", str(manifest), "--frontend-port", str(self.port),
                "--control-port", str(self.control_port), "--grace", "10", *args]
        # `cwd`: where the user runs it from (relative paths in its arguments are relative to it); this
        # checkout stays importable from there
        where = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)} \
            if cwd else {}
        self.popen = subprocess.Popen(argv, cwd=cwd or REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1", **where, **(env or {})},
                                      start_new_session=True)
        self.seen_pids: set[int] = set()

    @staticmethod
    def reserve_control_port() -> int:
        """A control port to hand to what must know it before the run starts (a Prometheus' service discovery)."""
        return free_port()

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def status(self) -> dict:
        status, body = http_get(self.control + "/status")
        assert status == 200, body
        data = json.loads(body)
        self.seen_pids |= {r["pid"] for r in data["replicas"] if r["pid"]}
        return data

    def replicas(self, service: str) -> list[dict]:
        return [r for r in self.status()["replicas"] if r["service"] == service]

    def wait_ready(self, counts: dict[str, int], timeout: float = 90) -> None:
        def ready() -> bool:
            assert self.popen.poll() is None, f"run exited:\n{self.log()}"
            reps = self.status()["replicas"]
            return all(sum(1 for r in reps if r["service"] == s and r["state"] == "ready") == n
                       and sum(1 for r in reps if r["service"] == s) == n for s, n in counts.items())
        try:
            wait_until(ready, timeout, f"replicas {counts} ready", interval=0.5)
        except TimeoutError:
            raise AssertionError(f"replicas not ready: {self.status()}\n{self.log()}") from None

    def wait_workers(self, model: str, count: int, timeout: float = 60) -> None:
        def seen() -> int:
            _, body = http_get(f"http://127.0.0.1:{self.port}/health")
            return sum(1 for i in json.loads(body).get("instances", []) if i.get("model") == model)
        wait_until(lambda: seen() >= count, timeout, f"{count} instance(s) of {model} at the frontend")

    def requests_total(self, replica: dict) -> float:
        status, body = http_get(f"http://127.0.0.1:{replica['system_port']}/metrics")
        assert status == 200
        value = metric_value(body.decode(), "dynamo_component_requests_total", {"dynamo_endpoint": "generate"})
        return value or 0.0

    def scale(self, service: str, replicas: int) -> dict:
        req = urllib.request.Request(self.control + "/scale", method="POST",
                                     data=json.dumps({"service": service, "replicas": replicas}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 40) -> int:
        if self.popen.poll() is None:
            try:
                self.status()
            except Exception:
                pass
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
                for pid in self.seen_pids:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                raise AssertionError(f"run did not stop within {timeout}s:\n{self.log()}") from None
        self._log.close()
        return self.popen.returncode

    def survivors(self) -> list[int]:
        """Replica processes, or members of their process groups, still running."""
        deadline = time.monotonic() + 5
        while True:
            alive = [p for p in self.seen_pids if pid_alive(p)] + group_members(self.seen_pids)
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)


def group_members(pgids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            found.append(int(entry))
    return found


async def stop_and_assert_reaped(sup: Supervisor, stop: asyncio.Event, runner: asyncio.Task, seen: set[int],
                                 timeout: float) -> None:
    """Stop a supervisor running in this process and await its run; then neither a replica process it started
    (those in `seen` and those it has now) nor a member of their process groups may still be running."""
    pids = seen | {r.pid for r in sup.replicas.values() if r.pid}  # read before the shutdown retires them
    stop.set()
    await asyncio.wait_for(runner, timeout)
    alive = [p for p in pids if pid_alive(p)] + group_members(pids)
    assert alive == [], f"replica processes left running: {alive}"


def names_in(text: str) -> list[str]:
    return re.findall(r"^\[([A-Za-z]+-\d+)\]", text, re.M)

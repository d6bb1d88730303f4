"""`run` killed outright (SIGKILL: no shutdown code runs) still takes its replicas with it:
each child is started with PR_SET_PDEATHSIG, so the kernel sends it SIGTERM when `run` dies
(dynamo/deploy/README.md, "Ctrl-C / SIGTERM"), and its guard removes the temporary directories
`run` would have removed (its state dir, the pods' private /tmp)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DeployRun, group_members, pid_alive
from tests.deploy.manifests import one_service_graph
from tests.fixtures.procs import REPO, wait_until

MOCKER = REPO / "examples/backends/mocker/deploy"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def children(pid: int) -> set[int]:
    """Live child processes of `pid` (every thread's children)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
            found |= {int(c) for c in fh.read().split()}
    return {c for c in found if pid_alive(c)}


def still_running(pids: set[int], deadline_s: float) -> list[int]:
    """The processes of `pids` (and of their process groups) still alive after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        alive = sorted({p for p in pids if pid_alive(p)} | set(group_members(pids)))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_replicas_exit_when_run_is_sigkilled(tmp_path, tiny_model):
    run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", str(tiny_model), "--set", "MockerWorker.replicas=2")
    started: set[int] = set()
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 2})
        replicas = {r["pid"] for r in run.status()["replicas"]}
        started = children(run.popen.pid)
        assert len(replicas) == 3 and replicas <= started, (replicas, started)
        started |= replicas

        state, pods = re.search(r"; state (\S+); pods' /tmp (\S+)/<replica>", run.log()).groups()
        assert Path(state, "control.json").is_file() and Path(pods, "MockerWorker-1").is_dir()

        os.kill(run.popen.pid, signal.SIGKILL)
        run.popen.wait(30)
        assert run.popen.returncode == -signal.SIGKILL
        left = still_running(started, 30)
        assert left == [], f"still running 30 s after `run` was SIGKILLed: {left}\n{run.log()}"
        wait_until(lambda: not Path(state).exists() and not Path(pods).exists(), 30,
                   "the guard to remove run's state and pods directories")
    finally:
        for pid in still_running(started, 0):  # nothing outlives a failed test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run.stop()


PIPELINE = one_service_graph("pipeline", ["/bin/sh", "-c"],
                             args=["python3 -c 'import time; time.sleep(600)' 2>&1 | tee /tmp/worker.log"])


def test_a_shell_pipeline_replica_goes_too(tmp_path):
    """The deployment guides' form, `sh -c "engine ... | tee /tmp/worker.log"`: the death signal
    reaches only the shell; the engine and `tee` (its process group) are stopped by the guard
    that `run` leaves behind (dynamo/deploy/group_guard.py)."""
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(yaml.safe_dump(PIPELINE))
    run = DeployRun(manifest, tmp_path)
    group: set[int] = set()
    try:
        # Not a Dynamo process: it never answers the worker's health probe, so it stays "starting".
        # The one replica listed with a pid: all() of a table that does not list it yet is vacuously
        # true, and a busy CI box once read the status that early (the unpacking below then failed).
        wait_until(lambda: [bool(r["pid"]) for r in run.replicas("Worker")] == [True], 60, "the replica started")
        (pgid,) = {r["pid"] for r in run.replicas("Worker")}
        group = {pgid}
        wait_until(lambda: len(group_members(group)) >= 3, 30, "the shell, python and tee running")
        members = set(group_members(group))
        os.kill(run.popen.pid, signal.SIGKILL)
        run.popen.wait(30)
        left = still_running(members | group, 30)
        assert left == [], f"still running 30 s after `run` was SIGKILLed: {left}\n{run.log()}"
    finally:
        for pid in still_running(group, 0):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run.stop()

"""A thorough sweep's candidate deployment never outlives the profiler: SIGTERM or SIGINT to
`python -m dynamo.profiler` mid-sweep stops the candidate's `dynamo.deploy run` (and its replicas)
before the profiler exits non-zero (128 + the signal), and a profiler killed outright (SIGKILL) takes
it along too (PR_SET_PDEATHSIG). The audit's candidate kept running with ppid 1."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import pid_alive
from tests.fixtures.procs import REPO, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def dgdr() -> dict:
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest",
            "metadata": {"name": "sig"},
            "spec": {"model": "tiny-llama", "backend": "vllm", "searchStrategy": "thorough", "autoApply": False,
                     "workload": {"isl": 128, "osl": 16}, "sla": {"ttft": 2000, "itl": 200},
                     "features": {"mocker": {"enabled": True}}}}


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task") if pid_alive(parent) else []:
            with contextlib.suppress(OSError), open(f"/proc/{parent}/task/{task}/children") as fh:
                kids = {int(c) for c in fh.read().split()} - found
                found |= kids
                todo += kids
    return found


def candidate_runs(manifest: Path) -> list[int]:
    """Live `dynamo.deploy run` processes of the candidate manifest."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
            if str(manifest).encode() in argv and b"dynamo.deploy" in argv and pid_alive(int(entry)):
                found.append(int(entry))
    return found


def alive_after(pids: set[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return sorted(p for p in pids if pid_alive(p))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_mid_sweep_stops_the_candidate_deployment(tmp_path, tiny_model, signum):
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(dgdr()))
    out = tmp_path / "out"
    sweep = ["--prefill-interpolation-granularity", "2", "--decode-interpolation-granularity", "2",
             "--concurrency-points", "2", "--decode-osl", "16", "--max-context-length", "512",
             "--mocker-speedup-ratio", "0.05"]  # a slow candidate: the signal lands mid-sweep
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(tmp_path / "profiler.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "dynamo.profiler", "--config", "dgdr.yaml", "--output-dir",
                             str(out), "--model", str(tiny_model), *sweep],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    text = lambda: (tmp_path / "profiler.log").read_text(errors="replace")  # noqa: E731
    started: set[int] = set()
    try:
        def sweeping() -> bool:
            assert proc.poll() is None, f"profiler exited {proc.returncode}:\n{text()[-4000:]}"
            status = out / "profiler_status.yaml"
            return status.exists() and (yaml.safe_load(status.read_text()) or {}).get("profilingPhase") in (
                "SweepingPrefill", "SweepingDecode")
        wait_until(sweeping, 150, "the candidate deployed and measured", interval=0.3)
        # the candidate's deployment now: its real-time prefill one (a speedup ratio is set), or its decode one
        runs = [pid for manifest in (out / "candidates" / "tp1").glob("**/dgd.yaml") for pid in candidate_runs(manifest)]
        assert len(runs) == 1, runs
        started = {runs[0], *descendants(runs[0])}
        assert len(started) >= 4, started  # run, Frontend and two mockers

        os.kill(proc.pid, signum)
        rc = proc.wait(60)
        if signum == signal.SIGKILL:
            assert rc == -signal.SIGKILL
        else:
            assert rc == 128 + signum, text()[-3000:]
            status = yaml.safe_load((out / "profiler_status.yaml").read_text())
            assert status["phase"] == "Failed" and signum.name in status["message"], status
        left = alive_after(started, 40)
        assert left == [], f"candidate processes still running after {signum.name}: {left}\n{text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in started:  # nothing outlives a failed test
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        log.close()

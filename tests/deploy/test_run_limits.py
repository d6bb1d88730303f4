"""What `run` refuses before starting anything, and what it cuts short once running (real `run` processes):

- a port it owns (`--frontend-port`, `--control-port`) already taken: exit 2 naming it, no replica started
  (a frontend that cannot bind would otherwise be restarted forever);
- a replica count beyond its limit, from `--set` (exit 2), from `POST /scale` (400) or the `scale` CLI (2);
- a scale-up in progress ends when a scale to 0 and SIGTERM follow it, and nothing is left running.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from dynamo.deploy.supervisor import MAX_REPLICAS
from tests.deploy.helpers import DeployRun, group_members, pid_alive
from tests.deploy.test_supervisor_scale import write_sleepers
from tests.fixtures.procs import REPO, free_port, wait_until

MOCKER = REPO / "examples/backends/mocker/deploy"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def post_scale(control: str, service: str, replicas: int) -> tuple[int, dict]:
    req = urllib.request.Request(control + "/scale", method="POST",
                                 data=json.dumps({"service": service, "replicas": replicas}).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def exit_of(run: DeployRun, timeout: float = 60) -> int:
    try:
        return run.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        run.stop(signal.SIGKILL)
        raise AssertionError(f"run still running after {timeout}s:\n{run.log()}") from None


@pytest.mark.parametrize("flag", ["--frontend-port", "--control-port"])
def test_a_taken_port_of_its_own_stops_run_before_anything_starts(tmp_path, tiny_model, flag):
    holder = socket.socket()
    holder.bind(("127.0.0.1", free_port()))  # another process's listener, on loopback only
    holder.listen()
    port = holder.getsockname()[1]
    try:
        # the flag given last wins over the free port DeployRun gives each
        run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", str(tiny_model), flag, str(port))
        code = exit_of(run)
        log = run.log()
        assert code == 2, log
        assert f"error: {flag} {port} is in use" in log, log
        assert "[Frontend-0]" not in log and "[MockerWorker-0]" not in log and "restarting" not in log, log
    finally:
        holder.close()


def test_replicas_beyond_the_limit_are_refused_by_set_scale_and_the_cli(tmp_path):
    manifest = write_sleepers(tmp_path)
    refused = DeployRun(manifest, tmp_path, "--set", "Worker.replicas=100000")
    assert exit_of(refused) == 2
    assert f"limit of {MAX_REPLICAS}" in refused.log() and "[Worker-0]" not in refused.log(), refused.log()

    run = DeployRun(manifest, tmp_path)
    try:
        wait_until(lambda: len(run.replicas("Worker")) == 1, 30, "one replica")
        status, body = post_scale(run.control, "Worker", 100000)
        assert status == 400 and f"limit of {MAX_REPLICAS}" in body["error"], body
        cli = subprocess.run([sys.executable, "-m", "dynamo.deploy", "scale", run.control, "Worker=100000"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 2 and f"limit of {MAX_REPLICAS}" in cli.stderr, cli
        assert run.status()["services"] == {"Worker": 1}
    finally:
        assert run.stop() == 0


def test_a_scale_up_ends_at_a_scale_to_zero_and_sigterm_stops_everything(tmp_path):
    run = DeployRun(write_sleepers(tmp_path), tmp_path)
    try:
        wait_until(lambda: len(run.replicas("Worker")) == 1, 30, "one replica")
        assert post_scale(run.control, "Worker", MAX_REPLICAS)[0] == 200
        assert post_scale(run.control, "Worker", 0)[0] == 200
        wait_until(lambda: run.status()["replicas"] == [], 30, "every replica retired")
        assert post_scale(run.control, "Worker", MAX_REPLICAS)[0] == 200
        run.status()  # remember the pids started so far
    finally:
        assert run.stop(signal.SIGTERM, timeout=30) == 0, run.log()
    left = [p for p in run.seen_pids if pid_alive(p)] + group_members(run.seen_pids)
    assert left == [], f"left running after SIGTERM: {left}"

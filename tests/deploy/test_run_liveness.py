"""`run` acts on liveness as the kubelet does: a real mocker replica frozen with SIGSTOP (its process
runs on, its `/live` never answers) fails the manifest's liveness probe `failureThreshold` times, shows as
`unhealthy` (never back to `starting`), is killed (SIGTERM, SIGKILL after the pod's grace: a stopped
process cannot act on SIGTERM) and restarted, counted in `restarts`, and serves again. The probe's
timings are generous: a healthy replica on a loaded 2-core machine answers within them."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
import yaml

from tests.deploy.helpers import DeployRun, pid_alive
from tests.deploy.manifests import mocker_graph
from tests.fixtures.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Generous: a loaded 2-core machine must not fail a healthy replica's probe three times in a row.
LIVENESS = {"httpGet": {"path": "/live", "port": 9090}, "periodSeconds": 2, "timeoutSeconds": 10, "failureThreshold": 3}


def frozen_worker_graph() -> dict:
    doc = mocker_graph(worker={"livenessProbe": LIVENESS})
    del doc["spec"]["services"]["Frontend"]  # the worker alone: less for a loaded machine to start
    doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["terminationGracePeriodSeconds"] = 2
    return doc


def test_a_frozen_replica_is_killed_by_its_liveness_probe_and_restarted(tmp_path, tiny_model):
    manifest = tmp_path / "frozen.yaml"
    manifest.write_text(yaml.safe_dump(frozen_worker_graph()))
    run = DeployRun(manifest, tmp_path, "--model", str(tiny_model))
    victim = 0
    try:
        run.wait_ready({"MockerWorker": 1}, timeout=120)
        (replica,) = run.replicas("MockerWorker")
        victim = replica["pid"]
        os.kill(victim, signal.SIGSTOP)
        seen: list[str] = []  # the frozen replica's states, as `GET /status` shows them

        def restarted() -> bool:
            (now,) = run.replicas("MockerWorker")
            if now["pid"] == victim:
                seen.append(now["state"])
            return now["pid"] not in (victim, None) and now["restarts"] == 1

        wait_until(restarted, 90, "the frozen replica killed and restarted", interval=0.3)
        assert "unhealthy" in seen and "starting" not in seen, seen
        assert not pid_alive(victim)
        log = run.log()
        assert "[MockerWorker-0] liveness probe failed 3 time(s) in a row: killing it" in log, log
        assert "DYN_SYSTEM_ENABLED is deprecated" not in log  # `run` no longer injects it
        run.wait_ready({"MockerWorker": 1}, timeout=120)
        (back,) = run.replicas("MockerWorker")
        assert back["restarts"] == 1 and back["state"] == "ready"
        assert run.stop() == 0
        assert run.survivors() == []
    finally:
        if victim and pid_alive(victim):
            with contextlib.suppress(OSError):
                os.killpg(victim, signal.SIGKILL)
        run.stop()


def test_a_healthy_replica_is_left_alone(tmp_path, tiny_model):
    """The same probe on a replica that answers: no restart over several of its periods."""
    manifest = tmp_path / "healthy.yaml"
    manifest.write_text(yaml.safe_dump(frozen_worker_graph()))
    run = DeployRun(manifest, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"MockerWorker": 1}, timeout=120)
        (before,) = run.replicas("MockerWorker")
        time.sleep(12)  # six liveness periods
        (after,) = run.replicas("MockerWorker")
        assert (after["pid"], after["restarts"], after["state"]) == (before["pid"], 0, "ready"), run.log()
    finally:
        run.stop()

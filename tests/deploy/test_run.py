"""`python -m dynamo.deploy run` end to end with the mocker graphs: requests through the
frontend, every worker replica taking traffic, restart of a killed replica, scaling
through the control endpoint, and a shutdown that leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.deploy.helpers import DeployRun, chat, names_in, pid_alive
from tests.fixtures.procs import REPO, wait_until

MOCKER = REPO / "examples/backends/mocker/deploy"
MODEL = "tiny-llama"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def send(run: DeployRun, n: int, tag: str) -> None:
    prompts = [f"{tag} request {i}: " + "lorem ipsum " * (i % 5 + 1) for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        for reply in pool.map(lambda p: chat(run.port, MODEL, p), prompts):
            assert reply["choices"][0]["message"]["role"] == "assistant"
            assert reply["usage"]["completion_tokens"] >= 1


def each_replica_served(run: DeployRun, service: str) -> list[float]:
    return [run.requests_total(r) for r in run.replicas(service)]


@pytest.fixture
def agg(tmp_path, tiny_model):
    run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", str(tiny_model), "--set", "MockerWorker.replicas=2")
    yield run
    run.stop()


def test_agg_serves_restarts_scales_and_stops_clean(agg, tmp_path):
    agg.wait_ready({"Frontend": 1, "MockerWorker": 2})
    agg.wait_workers(MODEL, 2)
    send(agg, 8, "agg")
    assert all(n > 0 for n in each_replica_served(agg, "MockerWorker")), agg.status()

    # A killed replica comes back (same replica slot, new process) and serves again.
    victim = agg.replicas("MockerWorker")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: any(r["replica"] == 0 and r["pid"] != victim["pid"] and r["restarts"] == 1
                           for r in agg.replicas("MockerWorker")), 30, "replica 0 restarted")
    agg.wait_ready({"MockerWorker": 2})
    assert "[MockerWorker-0] exited with code -9" in agg.log()

    # Scale up through the control endpoint, then back down.
    assert agg.scale("MockerWorker", 3)["services"]["MockerWorker"] == 3
    agg.wait_ready({"MockerWorker": 3})
    agg.wait_workers(MODEL, 3)
    send(agg, 6, "scaled")
    agg.scale("MockerWorker", 1)
    agg.wait_ready({"MockerWorker": 1})
    control_errors_and_scale_cli(agg)

    assert agg.stop(signal.SIGTERM) == 0
    assert agg.survivors() == []
    logs = agg.log_path.read_text(errors="replace")  # all of it: the scaled-up replica spoke early on
    assert {"Frontend-0", "MockerWorker-0", "MockerWorker-1", "MockerWorker-2"} <= set(names_in(logs))
    assert "all replicas stopped" in logs


@pytest.mark.parametrize("manifest,workers", [
    ("agg_router.yaml", {"MockerWorker": 2}),
    ("disagg_router.yaml", {"MockerDecodeWorker": 2, "MockerPrefillWorker": 2}),
])
def test_router_graphs_serve_on_every_replica(tmp_path, tiny_model, manifest, workers):
    run = DeployRun(MOCKER / manifest, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, **workers})
        run.wait_workers(MODEL, sum(workers.values()))
        send(run, 16, manifest)
        for service in workers:
            served = each_replica_served(run, service)
            assert all(n > 0 for n in served), (service, served, run.status())
        assert run.stop() == 0
        assert run.survivors() == []
    finally:
        run.stop()


def control_errors_and_scale_cli(run: DeployRun) -> None:
    """The control endpoint refuses bad input without touching the graph, and
    `python -m dynamo.deploy scale` is its client."""
    def post(path: str, body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(run.control + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
    status, body = post("/scale", json.dumps({"service": "NoSuchService", "replicas": 2}).encode())
    assert status == 404 and "NoSuchService" in body["error"]
    for bad in (b"{not json", json.dumps({"service": "MockerWorker"}).encode(),
                json.dumps({"service": "MockerWorker", "replicas": "two"}).encode()):
        status, body = post("/scale", bad)
        assert status == 400 and body["error"], bad
    assert post("/nowhere", b"{}")[0] == 404
    assert len(run.replicas("MockerWorker")) == 1  # nothing changed
    cli = [sys.executable, "-m", "dynamo.deploy", "scale", run.control]
    out = subprocess.run([*cli, "MockerWorker=2"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and json.loads(out.stdout)["MockerWorker"] == 2, out.stderr
    run.wait_ready({"MockerWorker": 2})
    bad = subprocess.run([*cli, "NoSuchService=1"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 1 and "error 404" in bad.stderr
    assert subprocess.run([*cli, "MockerWorker"], capture_output=True, text=True, timeout=60,
                          cwd=REPO).returncode == 2
    run.scale("MockerWorker", 1)
    run.wait_ready({"MockerWorker": 1})


STUBBORN = """\
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata:
  name: stubborn
spec:
  services:
    Stubborn:
      componentType: main
      replicas: 1
      extraPodSpec:
        mainContainer:
          image: local
          command: [python3, -c]
          args:
            - |
              import signal, subprocess, sys, time
              signal.signal(signal.SIGTERM, signal.SIG_IGN)
              child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # inherits SIG_IGN
              print("ignoring SIGTERM, child", child.pid, flush=True)
              time.sleep(600)
"""


def test_grace_then_sigkill_for_a_replica_that_ignores_sigterm(tmp_path):
    """`--grace 2`: SIGTERM to the replica's process group, SIGKILL to the whole group (its
    child too) once the grace is over, and `run` still exits cleanly."""
    manifest = tmp_path / "stubborn.yaml"
    manifest.write_text(STUBBORN)
    run = DeployRun(manifest, tmp_path, "--grace", "2")
    try:
        wait_until(lambda: "ignoring SIGTERM, child" in run.log() and run.replicas("Stubborn")[0]["pid"], 60,
                   "the stubborn replica to start")
        (replica,) = run.replicas("Stubborn")
        child = int(run.log().split("ignoring SIGTERM, child ")[1].split()[0])
        started = time.monotonic()
        assert run.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started >= 2  # the grace was given before the kill
        assert f"pid {replica['pid']} did not stop within 2s: killing its process group" in run.log()
        assert "all replicas stopped" in run.log()
        assert run.survivors() == [] and not pid_alive(child)
    finally:
        run.stop()


def test_a_kserve_frontend_runs_as_written(tmp_path, tiny_model):
    """A graph whose frontend takes Dynamo's --kserve-grpc-server: `run` gives it the frontend port for gRPC
    and a port of its own for the HTTP routes, and is ready by those; Triton's client infers through it."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import yaml

    doc = yaml.safe_load((MOCKER / "agg.yaml").read_text())
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]["args"] += ["--kserve-grpc-server"]
    manifest = tmp_path / "kserve.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    run = DeployRun(manifest, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1})
        (frontend,) = run.replicas("Frontend")
        assert frontend["http_port"] != run.port  # the HTTP routes moved off the gRPC port
        with grpcclient.InferenceServerClient(f"127.0.0.1:{run.port}") as client:
            wait_until(lambda: client.is_model_ready(MODEL), 60, "the model ready over gRPC")
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([b"hello"], dtype=np.object_))
            result = client.infer(MODEL, [text], parameters={"max_tokens": 3})
            assert [x.decode() for x in result.as_numpy("finish_reason")] == ["length"]
    finally:
        assert run.stop() == 0

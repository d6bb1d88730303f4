"""`python -m dynamo.deploy run` end to end with the mocker graphs: requests through the
frontend, every worker replica taking traffic, restart of a killed replica, scaling
through the control endpoint, and a shutdown that leaves no process behind."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.deploy.helpers import DeployRun, chat, names_in
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

    assert agg.stop(signal.SIGTERM) == 0
    assert agg.survivors() == []
    logs = agg.log()
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

"""Dynamo's autoscaling guide on one machine: `dynamo.deploy run` of the example graph with its KEDA
ScaledObject, a real Prometheus scraping the run through the control endpoint's HTTP service discovery.
The idle worker is scaled to zero; a request for the model is held by the frontend
(`--wait-for-workers-secs`), the demand it makes reaches Prometheus, the ScaledObject activates the
worker from zero, the request is answered, and once idle again the worker goes back to zero."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO, http_get, wait_until
from tests.planner.prometheus_server import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLE = REPO / "examples/backends/mocker/deploy/autoscaling.yaml"
MODEL = "tiny-llama"


def manifest(tmp: Path) -> Path:
    """The example, its ScaledObject on a test's clock (and without the frontend's CPU HPA: a loaded
    test machine must not scale the frontend)."""
    graph, _hpa, keda = yaml.safe_load_all(EXAMPLE.read_text())
    keda["spec"].update(pollingInterval=1, cooldownPeriod=3, initialCooldownPeriod=15)
    path = tmp / "autoscaling.yaml"
    path.write_text(yaml.safe_dump_all([graph, keda], sort_keys=False))
    return path


def replicas(run: DeployRun, service: str) -> int:
    return run.status()["services"][service]


def test_keda_scales_the_worker_to_zero_and_back_for_a_held_request(tmp_path, tiny_model):
    path = manifest(tmp_path)
    prom = run = None
    try:
        control_port = DeployRun.reserve_control_port()
        prom = PrometheusServer(tmp_path / "prom", [], "unused",
                                http_sd=f"http://127.0.0.1:{control_port}/prometheus/targets")
        run = DeployRun(path, tmp_path, "--model", str(tiny_model), "--prometheus-endpoint", prom.url,
                        control_port=control_port)
        run.wait_ready({"Frontend": 1, "MockerWorker": 1})
        run.wait_workers(MODEL, 1)  # the frontend knows the model before its worker goes away
        status, body = http_get(run.control + "/prometheus/targets")
        targets = {t["labels"]["service"]: t for t in json.loads(body)}
        (frontend,) = run.replicas("Frontend")  # scraped on its own port (the service's is shared by its replicas)
        assert status == 200 and targets["Frontend"]["targets"] == [f"127.0.0.1:{frontend['http_port']}"]
        assert targets["Frontend"]["labels"]["dynamo_graph_deployment"] == "mocker-autoscaling"
        wait_until(lambda: replicas(run, "MockerWorker") == 0, 60, "the idle worker scaled to zero")
        run.wait_ready({"MockerWorker": 0})
        answer: dict = {}
        asking = threading.Thread(target=lambda: answer.update(chat(run.port, MODEL, "hello", max_tokens=8,
                                                                     timeout=120)), daemon=True)
        asking.start()
        wait_until(lambda: replicas(run, "MockerWorker") == 1, 60, "the worker activated from zero")
        asking.join(120)
        assert answer["usage"]["completion_tokens"] == 8, answer
        assert "ScaledObject mocker-autoscaling-mockerworker: MockerWorker 0 -> 1" in run.log()
        (evaluated,) = run.status()["autoscalers"]  # what the autoscaler last read and decided
        assert evaluated["service"] == "MockerWorker" and "prometheus" in evaluated["metrics"]
        wait_until(lambda: replicas(run, "MockerWorker") == 0, 60, "back to zero once idle")
    finally:
        if run is not None:
            run.stop()
        if prom is not None:
            prom.stop()

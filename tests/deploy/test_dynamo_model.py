"""`DynamoModel` beside a DGD: `deploy run` loads the adapter on every matching worker replica
(also one restarted after SIGKILL and one added by scaling) and reports TOTAL/READY; `render`
adds a loader sidecar to the matching worker Deployment; a bad DynamoModel is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from dynamo.llm.tiny_lora import build_tiny_lora
from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO, http_get, wait_until

EXAMPLE = REPO / "examples/backends/mocker/deploy/agg_lora.yaml"
MODEL, ADAPTER = "tiny-llama", "tiny-lora"
pytestmark = pytest.mark.e2e


def manifest_with(tmp_path, uri: str, **spec) -> str:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    docs[1]["spec"]["source"]["uri"] = uri
    docs[1]["spec"].update(spec)
    path = tmp_path / "agg_lora.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def models_status(run: DeployRun) -> dict:
    return {m["model"]: m for m in run.status().get("models", [])}


def listed(run: DeployRun) -> list[str]:
    status, body = http_get(f"http://127.0.0.1:{run.port}/v1/models")
    return [m["id"] for m in json.loads(body)["data"]] if status == 200 else []


def holds(replica: dict) -> bool:
    status, body = http_get(f"http://127.0.0.1:{replica['system_port']}/v1/loras")
    return status == 200 and ADAPTER in json.loads(body)["loras"]


@pytest.mark.timeout(300)
def test_run_places_the_adapter_on_every_replica_including_restarted_ones(tmp_path, tiny_model):
    adapter = build_tiny_lora(tiny_model, tmp_path / "tiny-lora")
    run = DeployRun(manifest_with(tmp_path, adapter.as_uri()), tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 2})
        wait_until(lambda: models_status(run).get(ADAPTER, {}).get("ready") == 2, 60, "adapter READY 2/2")
        assert models_status(run)[ADAPTER] == {"model": ADAPTER, "base": MODEL, "type": "lora", "total": 2,
                                               "ready": 2}
        assert all(holds(r) for r in run.replicas("MockerWorker"))
        wait_until(lambda: ADAPTER in listed(run), 30, "adapter in the frontend's /v1/models")
        assert chat(run.port, ADAPTER, "hello adapter")["model"] == ADAPTER

        victim = run.replicas("MockerWorker")[0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: any(r["replica"] == 0 and r["pid"] != victim["pid"] for r in run.replicas("MockerWorker")),
                   30, "replica 0 restarted")
        run.wait_ready({"MockerWorker": 2})
        wait_until(lambda: all(holds(r) for r in run.replicas("MockerWorker")), 60, "restarted replica has it")
        run.scale("MockerWorker", 3)
        run.wait_ready({"MockerWorker": 3})
        wait_until(lambda: models_status(run)[ADAPTER]["ready"] == 3, 60, "adapter READY 3/3")
        assert models_status(run)[ADAPTER]["total"] == 3
        assert "MODEL" in run.log() and "READY" in run.log()
    finally:
        assert run.stop() == 0


def test_render_adds_a_loader_sidecar_to_matching_workers(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render",
                          manifest_with(tmp_path, "hf://org/tiny-lora")], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    deployments = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d["kind"] == "Deployment"}
    worker = deployments["mocker-agg-lora-mockerworker"]["spec"]["template"]["spec"]["containers"]
    frontend = deployments["mocker-agg-lora-frontend"]["spec"]["template"]["spec"]["containers"]
    assert len(frontend) == 1 and len(worker) == 2
    sidecar = worker[1]
    assert sidecar["command"] == ["python3", "-m", "dynamo.deploy.dynamo_model"]
    assert sidecar["args"] == ["--port", "9090", "--name", ADAPTER, "--uri", "hf://org/tiny-lora"]
    assert sidecar["image"] == worker[0]["image"]


@pytest.mark.parametrize("spec,message", [
    ({"baseModelName": "nobody"}, "no service"),
    ({"modelType": "weird"}, "modelType"),
])
def test_bad_dynamo_model_is_refused(tmp_path, spec, message):
    out = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render", manifest_with(tmp_path, "hf://o/x", **spec)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr

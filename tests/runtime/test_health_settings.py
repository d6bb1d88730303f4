"""Dynamo's health settings: DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS (only the named endpoints make a worker
ready), DYN_SYSTEM_STARTING_HEALTH_STATUS (ready before any endpoint serves), DYN_SYSTEM_HEALTH_PATH /
DYN_SYSTEM_LIVE_PATH and the frontend's DYN_HTTP_SVC_HEALTH_PATH / DYN_HTTP_SVC_LIVE_PATH on real processes,
and `render`'s default probes following a service that moves its paths."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry

from dynamo.deploy.contract import default_probes
from dynamo.deploy.model import EnvVar
from dynamo.deploy.validate import validate_file
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.system_server import HealthState, SystemServer
from tests.fixtures.procs import REPO, Cluster, http_get, wait_until


@pytest.mark.parametrize("raw", ['["generate"]', "generate", ' ["generate", "clear_kv_blocks"] '])
def test_the_endpoints_that_count_read_as_dynamo_writes_them(raw):
    assert "generate" in RuntimeSettings.from_env({"DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": raw}).required_endpoints()
    assert RuntimeSettings.from_env({}).required_endpoints() is None


def test_only_the_named_endpoints_make_a_worker_ready():
    health = HealthState(required={"generate"})
    assert not health.ready()
    health.endpoints["dyn://ns.backend.kv_query"] = "ready"
    assert not health.ready()  # the one that counts does not serve yet
    health.endpoints["dyn://ns.backend.generate"] = "ready"
    assert health.ready()
    health.endpoints["dyn://ns.backend.kv_query"] = "notready"
    assert health.ready()  # not one that counts
    health.endpoints["dyn://ns.backend.generate"] = "notready"
    assert not health.ready()


def test_a_starting_status_of_ready_is_healthy_before_any_endpoint():
    assert HealthState(starting_ready=True).ready() and not HealthState().ready()
    health = HealthState(starting_ready=True)
    health.endpoints["dyn://ns.backend.generate"] = "notready"  # draining, or a failed canary
    assert not health.ready()
    dead = HealthState(starting_ready=True)
    dead.engine_ok = False
    assert not dead.ready()


def test_render_probes_follow_moved_paths():
    (graph,) = validate_file(REPO / "examples/backends/mocker/deploy/agg.yaml").graphs
    worker, frontend = graph.spec.services["MockerWorker"], graph.spec.services["Frontend"]
    assert default_probes(worker)["readiness"]["httpGet"]["path"] == "/health"
    worker.envs = [EnvVar(name="DYN_SYSTEM_HEALTH_PATH", value="/hz"), EnvVar(name="DYN_SYSTEM_LIVE_PATH", value="/lz")]
    probes = default_probes(worker)
    assert probes["readiness"]["httpGet"]["path"] == "/hz" and probes["liveness"]["httpGet"]["path"] == "/lz"
    frontend.envs = [EnvVar(name="DYN_HTTP_SVC_HEALTH_PATH", value="/fhz")]
    probes = default_probes(frontend)
    assert probes["liveness"]["httpGet"]["path"] == "/fhz" and "/fhz" in str(probes["readiness"]["exec"])


@pytest.mark.e2e
def test_moved_paths_on_a_real_worker_and_frontend(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        worker = c.mocker("--speedup-ratio", "100", env={
            "DYN_SYSTEM_HEALTH_PATH": "/custom/health", "DYN_SYSTEM_LIVE_PATH": "/custom/live",
            "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": '["generate"]'})
        c.frontend(env={"DYN_HTTP_SVC_HEALTH_PATH": "/hz", "DYN_HTTP_SVC_LIVE_PATH": "/live",
                        "DYN_HTTP_SVC_CHAT_PATH": "/api/chat", "DYN_HTTP_SVC_RERANK_PATH": "/api/rerank"})
        wait_until(lambda: "tiny" in c.models(), 60, "the frontend to list the model")
        system = f"http://127.0.0.1:{worker.system_port}"
        wait_until(lambda: http_get(system + "/custom/health")[0] == 200, 60, "the worker healthy at its path")
        assert http_get(system + "/custom/live")[0] == 200
        assert http_get(system + "/health")[0] == 404
        status, body = http_get(c.base_url + "/hz")
        assert status == 200 and b"generate" in body, body  # the frontend's health, at its path
        assert http_get(c.base_url + "/health")[0] == 404
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(c.base_url + "/api/chat", json=chat, timeout=60).status_code == 200
        assert httpx.post(c.base_url + "/v1/chat/completions", json=chat, timeout=60).status_code == 404
        assert httpx.post(c.base_url + "/v1/completions", json={**chat, "prompt": "hi"}, timeout=60).status_code == 200
        rerank = {"model": "tiny", "query": "q", "documents": ["d"]}  # moved: found there (a chat model: 404 model)
        moved = httpx.post(c.base_url + "/api/rerank", json=rerank, timeout=60)
        assert moved.status_code == 404 and moved.json()["error"]["code"] == "model_not_found", moved.text
        assert httpx.post(c.base_url + "/v1/rerank", json=rerank, timeout=60).json()["error"]["code"] != "model_not_found"
        doc = httpx.get(c.base_url + "/openapi.json", timeout=60).json()  # lists what is served, where
        assert "/api/chat" in doc["paths"] and "/v1/chat/completions" not in doc["paths"]
        assert "/v1/messages" not in doc["paths"] and "/busy_threshold" in doc["paths"]  # as enabled
        assert all(op["summary"] != path for path, ops in doc["paths"].items() for op in ops.values()), doc["paths"]
    finally:
        c.stop()


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_the_probe_and_metrics_routes_only_read(method):
    """A write to /metrics, /health or /live is a 405 naming the methods, as the frontend answers (Prometheus,
    kubelet probes and people only read them)."""
    server = SystemServer(CollectorRegistry(), HealthState(starting_ready=True), "127.0.0.1", 0)

    async def ask(path: str, verb: str) -> tuple[int, dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)
        await server.app({"type": "http", "method": verb, "path": path}, None, send)
        return sent[0]["status"], dict(sent[0]["headers"])

    for path in ("/metrics", "/health", "/live"):
        status, headers = asyncio.run(ask(path, method))
        assert (status, headers[b"allow"]) == (405, b"GET, HEAD")
        assert asyncio.run(ask(path, "GET"))[0] == 200

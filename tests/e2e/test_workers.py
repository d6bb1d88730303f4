"""Workers coming and going under a running frontend: SIGKILL, restart, client
disconnects reaching the engine."""

from __future__ import annotations

import json
import signal

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("workers"), tiny_model, "file")
    try:
        c.frontend()
        yield c
    finally:
        c.stop()


def ask(cluster, model=MODEL, max_tokens=8):
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
    return client.completions.create(model=model, prompt="ping", max_tokens=max_tokens)


def test_killed_worker_disappears_and_survivor_serves(cluster):
    first = cluster.mocker("--speedup-ratio", "100")
    second = cluster.mocker("--speedup-ratio", "100")
    cluster.wait_workers(MODEL, 2)
    assert cluster.models() == [MODEL]
    first.kill(signal.SIGKILL)
    # Requests keep succeeding while discovery catches up (unreachable workers are skipped).
    for _ in range(6):
        assert ask(cluster).usage.completion_tokens == 8
    cluster.wait_workers(MODEL, 1, timeout=25)  # lease TTL is 10 s
    second.kill(signal.SIGKILL)
    wait_until(lambda: cluster.models() == [], 25, "model to be unlisted")
    resp = httpx.post(cluster.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2},
                      timeout=30)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_workers"
    # A new worker is picked up without restarting the frontend.
    cluster.mocker("--speedup-ratio", "100")
    cluster.wait_workers(MODEL, 1)
    assert ask(cluster).usage.completion_tokens == 8


def test_client_disconnect_frees_the_request_in_the_worker(cluster):
    slow = cluster.mocker("--speedup-ratio", "1", model_name="slow")
    cluster.wait_workers("slow", 1)
    metrics_url = f"http://127.0.0.1:{slow.system_port}/metrics"
    wait_until(lambda: http_get(f"http://127.0.0.1:{slow.system_port}/health")[0] == 200, 30, "worker health")
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", cluster.base_url + "/v1/completions",
                           json={"model": "slow", "prompt": "long one", "max_tokens": 1500, "stream": True}) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            seen = 0
            for line in lines:
                if line.startswith("data: "):
                    seen += 1
                if seen >= 3:
                    break

            def inflight():
                return metric_value(http_get(metrics_url)[1].decode(), "dynamo_component_inflight_requests")

            assert inflight() == 1
        # leaving the block closes the connection mid-stream
    wait_until(lambda: inflight() == 0, 15, "worker in-flight count back to 0")
    text = http_get(metrics_url)[1].decode()
    assert metric_value(text, "dynamo_mocker_running_requests") == 0
    assert metric_value(text, "dynamo_component_cancellation_total", {"dynamo_endpoint": "generate"}) == 1


def test_worker_health_and_graceful_shutdown(cluster):
    """SIGTERM: the worker leaves discovery before it exits (its instance key is gone the
    moment it has exited, not a lease TTL later) and the stream in flight runs to its end."""
    instances = cluster.tmp / "kv" / "v1" / "instances"
    before = {p for p in instances.rglob("*") if p.is_file()}
    worker = cluster.mocker("--speedup-ratio", "2", model_name="graceful")
    wait_until(lambda: http_get(f"http://127.0.0.1:{worker.system_port}/health")[0] == 200, 30, "health 200")
    status, body = http_get(f"http://127.0.0.1:{worker.system_port}/live")
    assert status == 200
    cluster.wait_workers("graceful", 1)
    keys = {p for p in instances.rglob("*") if p.is_file()} - before
    assert keys
    metrics_url = f"http://127.0.0.1:{worker.system_port}/metrics"
    body = {"model": "graceful", "prompt": "drain me", "max_tokens": 400, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    usage, finish = None, []
    with httpx.Client(timeout=60) as client, client.stream("POST", cluster.base_url + "/v1/completions",
                                                           json=body) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        wait_until(lambda: metric_value(http_get(metrics_url)[1].decode(), "dynamo_component_inflight_requests") == 1,
                   30, "the stream to be running in the worker")
        worker.popen.send_signal(signal.SIGTERM)
        for line in lines:
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                usage = chunk.get("usage") or usage
                finish += [c["finish_reason"] for c in chunk["choices"] if c["finish_reason"]]
    assert finish == ["length"] and usage["completion_tokens"] == 400
    assert worker.popen.wait(30) == 0
    assert not [k for k in keys if k.exists()]  # withdrawn by the worker itself, not by lease expiry
    assert "graceful" not in cluster.models()

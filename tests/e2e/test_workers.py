"""Workers coming and going under a running frontend: SIGKILL, restart, client
disconnects reaching the engine."""

from __future__ import annotations

import signal
import time

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
    assert metric_value(text, "dynamo_component_requests_total", {"status": "cancelled"}) == 1


def test_worker_health_and_graceful_shutdown(cluster):
    worker = cluster.mocker("--speedup-ratio", "100", model_name="graceful")
    wait_until(lambda: http_get(f"http://127.0.0.1:{worker.system_port}/health")[0] == 200, 30, "health 200")
    status, body = http_get(f"http://127.0.0.1:{worker.system_port}/live")
    assert status == 200
    cluster.wait_workers("graceful", 1)
    started = time.monotonic()
    assert worker.stop(timeout=20) == 0
    assert time.monotonic() - started < 15
    wait_until(lambda: "graceful" not in cluster.models(), 10, "gracefully stopped worker to leave at once")

"""`--router-min-initial-workers N` with real processes: the frontend answers /live and /health from the
start (Kubernetes' liveness probe must not restart it while its engines load), /health says it is not
serving yet and what it waits for, generation requests get 503 with a Retry-After until N workers are up
(not all routed to the first one), then they are served."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture()
def cluster(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        yield c
    finally:
        c.stop()


def _health(cluster) -> tuple[int, dict]:
    status, body = http_get(cluster.base_url + "/health")
    return status, json.loads(body)


def test_min_initial_workers_serves_probes_at_once_and_requests_once_enough_workers_are_up(cluster):
    frontend = cluster.frontend("--router-min-initial-workers", "2")  # waits for /live 200: no worker yet
    assert http_get(cluster.base_url + "/live")[0] == 200
    status, health = _health(cluster)
    assert status == 200 and health["status"] == "unhealthy"
    assert "waiting for 2 initial worker(s)" in health["message"] and "0 up so far" in health["message"], health

    cluster.mocker("--speedup-ratio", "100")
    cluster.wait_workers(MODEL, 1)
    status, health = _health(cluster)
    assert status == 200 and health["status"] == "unhealthy" and "1 up so far" in health["message"], health
    assert http_get(cluster.base_url + f"/v1/models/{MODEL}/ready")[0] == 503, "not ready while requests are refused"
    resp = httpx.post(cluster.base_url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                      timeout=30)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5", resp.text
    error = resp.json()["error"]
    assert error["code"] == "no_workers" and "waiting for 2 initial worker(s)" in error["message"], error
    client = cluster.openai_client()
    with pytest.raises(openai.InternalServerError) as refused:  # the official client sees the same 503
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert refused.value.status_code == 503

    cluster.mocker("--speedup-ratio", "100")
    cluster.wait_workers(MODEL, 2)
    status, health = _health(cluster)
    assert status == 200 and health["status"] == "healthy", health
    assert http_get(cluster.base_url + f"/v1/models/{MODEL}/ready")[0] == 200
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].finish_reason in ("length", "stop") and answer.usage.completion_tokens >= 1
    wait_until(lambda: "2 initial worker(s) up: serving" in frontend.log(), 10, "the frontend to say it serves")


def test_with_a_worker_wait_requests_before_the_initial_workers_wait_for_them(cluster):
    """--wait-for-workers-secs holds requests for workers: a request sent before the initial workers are up waits
    for them (no 503), and /health keeps saying healthy for the model whose requests it holds."""
    cluster.frontend("--router-min-initial-workers", "1", "--wait-for-workers-secs", "120", "--model-name", MODEL)
    status, health = _health(cluster)
    assert status == 200 and health["status"] == "healthy" and "waiting for 1 initial worker(s)" in health["message"]
    answer: dict = {}

    def ask() -> None:
        answer["resp"] = httpx.post(cluster.base_url + "/v1/completions", timeout=120,
                                    json={"model": MODEL, "prompt": "hi", "max_tokens": 2})

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(2.0)
    assert asking.is_alive(), f"held, not refused: {answer}"
    cluster.mocker("--speedup-ratio", "100")
    asking.join(90)
    assert answer["resp"].status_code == 200, answer["resp"].text

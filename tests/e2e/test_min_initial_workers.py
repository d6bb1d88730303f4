"""`--router-min-initial-workers N` with real processes: the frontend answers /live and /health from the
start (Kubernetes' liveness probe must not restart it while its engines load), /health says it is not
serving yet and what it waits for, generation requests get 503 with a Retry-After until N workers are up
(not all routed to the first one), then they are served."""

from __future__ import annotations

import json

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
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].finish_reason in ("length", "stop") and answer.usage.completion_tokens >= 1
    wait_until(lambda: "2 initial worker(s) up: serving" in frontend.log(), 10, "the frontend to say it serves")

"""A model scaled to zero and back (`--wait-for-workers-secs`): its requests wait for a worker instead
of failing, the model stays listed, and the held requests are the demand an autoscaler reads
(`dynamo_frontend_queued_requests`); the wait ends at its deadline, on overload and when the client leaves."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from dynamo.deploy import contract
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("scale-zero"), tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "100")
        c.frontend("--wait-for-workers-secs", "5", "--rejection-frontend-request-concurrency-limit", "1")
        c.short_url = c.base_url  # type: ignore[attr-defined]
        c.frontend("--wait-for-workers-secs", "120")
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def queued(url: str) -> float:
    return metric_value(http_get(url + "/metrics")[1].decode(), "dynamo_frontend_queued_requests",
                        {"model": MODEL}) or 0.0


def scale_to_zero(cluster) -> None:
    for proc in cluster.procs:
        if proc.name.startswith("mocker") and proc.alive():
            proc.kill(signal.SIGTERM)  # a graceful stop: the worker leaves discovery at once
    cluster.wait_workers(MODEL, 0, timeout=30)
    wait_until(lambda: cluster.worker_count(MODEL) == 0 and _instances(cluster.short_url) == 0, 30,
               "both frontends to see no worker")


def frontend_probe_passes(url: str) -> bool:
    """The frontend readiness probe `render` writes (the operator's: /health says healthy), run as the
    kubelet runs it."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    script = contract.FRONTEND_READY_SCRIPT.format(port=port, path="/health")
    return subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 0


def _instances(url: str) -> int:
    return len(json.loads(http_get(url + "/health")[1]).get("instances", []))


def test_a_request_waits_for_a_worker_and_is_answered_once_one_comes(cluster):
    scale_to_zero(cluster)
    assert cluster.models() == [MODEL]  # still listed: clients that check /v1/models carry on
    health = json.loads(http_get(cluster.base_url + "/health")[1])
    assert health["status"] == "healthy" and MODEL in health["message"] and health["instances"] == [], health
    assert frontend_probe_passes(cluster.base_url)  # still in its Service, or no request could ever wait here
    status, body = http_get(cluster.base_url + f"/v1/models/{MODEL}/ready")
    assert status == 503 and json.loads(body)["ready"] is False
    counted = httpx.post(cluster.base_url + "/v1/responses/input_tokens", json={"model": MODEL, "input": "hi"},
                         timeout=30)  # its tokenizer is kept: counting needs no worker
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0, counted.text
    metrics = http_get(cluster.base_url + "/metrics")[1].decode()
    assert metric_value(metrics, "dynamo_frontend_model_workers", {"model": MODEL}) == 0  # not the last count
    assert metric_value(metrics, "dynamo_frontend_model_ready", {"model": MODEL}) == 0
    result: dict = {}

    def ask() -> None:
        client = cluster.openai_client(timeout=150)
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=6, stream=True)
        chunks = list(stream)
        result["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        result["finish"] = [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    wait_until(lambda: queued(cluster.base_url) == 1, 30, "the request to be counted as waiting")
    time.sleep(1.0)
    assert thread.is_alive(), "the request did not wait for a worker"
    cluster.mocker("--speedup-ratio", "100")  # what KEDA does on that demand: scale the worker from zero
    thread.join(90)
    assert not thread.is_alive()
    assert result["finish"] == "length" and result["text"]
    assert queued(cluster.base_url) == 0
    metrics = http_get(cluster.base_url + "/metrics")[1].decode()
    started = {"model": MODEL, "endpoint": "chat_completions", "request_type": "stream"}
    assert metric_value(metrics, "dynamo_frontend_requests_started_total", started) == 1
    assert metric_value(metrics, "dynamo_frontend_active_requests", {"model": MODEL}) == 0
    assert metric_value(metrics, "dynamo_frontend_model_ready", {"model": MODEL}) == 1
    httpx.post(cluster.base_url + "/v1/completions", json={"model": "made-up", "prompt": "x"}, timeout=30)
    made_up = http_get(cluster.base_url + "/metrics")[1].decode()
    assert metric_value(made_up, "dynamo_frontend_requests_started_total", {"model": "made-up"}) is None


def test_the_wait_ends_at_its_deadline_and_on_overload(cluster):
    cluster.wait_workers(MODEL, 1, timeout=30)
    scale_to_zero(cluster)
    url = cluster.short_url
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    holder: dict = {}
    waiting = threading.Thread(target=lambda: holder.update(r=httpx.post(url + "/v1/completions", json=body,
                                                                         timeout=60)), daemon=True)
    started = time.monotonic()
    waiting.start()
    wait_until(lambda: queued(url) == 1, 10, "one request waiting")
    # The concurrency limit (1) counts the waiting request: the next one is refused at once.
    over = httpx.post(url + "/v1/completions", json=body, timeout=30)
    assert over.status_code == 529 and over.json()["error"]["code"] == "overloaded"
    waiting.join(30)
    resp = holder["r"]
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "no_workers"
    assert "waited 5 s" in resp.json()["error"]["message"]
    assert time.monotonic() - started >= 4.5
    assert queued(url) == 0


def test_a_client_that_leaves_stops_its_wait(cluster):
    if cluster.worker_count(MODEL):
        scale_to_zero(cluster)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(cluster.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2},
                   timeout=httpx.Timeout(30, read=1.5))
    wait_until(lambda: queued(cluster.base_url) == 0, 10, "the abandoned request to stop waiting")


def test_a_frontend_started_at_zero_knows_its_model_from_model_name(cluster):
    """A frontend (re)started while its workers are at zero has never seen the model: `--model-name` names it."""
    main_port = cluster.http_port
    try:
        cluster.frontend("--wait-for-workers-secs", "90", "--model-name", "later")
        assert "later" in cluster.models()
        status, _ = http_get(cluster.base_url + "/v1/models/later/ready")
        assert status == 503
        result: dict = {}
        client = cluster.openai_client(timeout=120)
        thread = threading.Thread(target=lambda: result.update(r=client.completions.create(
            model="later", prompt="hi", max_tokens=4)), daemon=True)
        thread.start()
        wait_until(lambda: metric_value(http_get(cluster.base_url + "/metrics")[1].decode(),
                                        "dynamo_frontend_queued_requests", {"model": "later"}) == 1, 30,
                   "the request for the expected model to wait")
        cluster.mocker("--speedup-ratio", "100", model_name="later")
        thread.join(90)
        assert result["r"].usage.completion_tokens == 4
        assert cluster.models().count("later") == 1
    finally:
        cluster.http_port = main_port


def test_a_stream_that_loses_the_only_worker_waits_for_its_replacement(tiny_model, tmp_path):
    """One worker, killed mid-stream and replaced (a restart, a node lost): with --migration-limit the stream
    continues on the replacement once it is up, instead of failing for want of another worker."""
    from tests.e2e.test_migration_limits import kill_the_busy_worker
    from tests.fixtures.load import sse_chunks

    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.workers = [c.mocker("--speedup-ratio", "0.5")]  # type: ignore[attr-defined]
        c.frontend("--wait-for-workers-secs", "60", "--migration-limit", "2")
        c.wait_workers(MODEL, 1)
        body = {"model": MODEL, "prompt": "survive a restart", "max_tokens": 300, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}
        pieces, finish, usage, replacement = [], [], None, None
        for chunk in sse_chunks(c.base_url, body):
            assert "error" not in chunk, chunk
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                pieces.append(choice["text"])
                finish += [choice["finish_reason"]] if choice["finish_reason"] else []
            if replacement is None and len(pieces) >= 10:
                kill_the_busy_worker(c)
                replacement = threading.Thread(target=lambda: (time.sleep(1.0), c.mocker("--speedup-ratio", "0.5")),
                                               daemon=True)
                replacement.start()
        assert finish == ["length"] and usage["completion_tokens"] == 300
        metrics = http_get(c.base_url + "/metrics")[1].decode()
        assert metric_value(metrics, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"}) == 1
    finally:
        c.stop()

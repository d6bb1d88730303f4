"""Disaggregated prefill/decode with mocker workers: the frontend sends the prompt to a
prefill worker, then the decode worker continues from the transferred KV; failures
fall back to local prefill unless disaggregation is enforced."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def worker_requests(proc) -> float:
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_requests_total", {"status": "success"}) or 0.0


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("disagg"), tiny_model, "file")
    try:
        c.prefill = c.mocker("--speedup-ratio", "50", "--disaggregation-mode", "prefill")
        c.decode = c.mocker("--speedup-ratio", "50", "--is-decode-worker")
        c.frontend()
        c.wait_workers(MODEL, 2)
        yield c
    finally:
        c.stop()


def frontend_metric(cluster, name, labels=None):
    return metric_value(http_get(cluster.base_url + "/metrics")[1].decode(), name, labels) or 0.0


def test_requests_are_prefilled_remotely(cluster):
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
    for stream in (False, True):
        if stream:
            parts = list(client.completions.create(model=MODEL, prompt="disaggregate me " * 20, max_tokens=12,
                                                   stream=True, stream_options={"include_usage": True}))
            assert parts[-1].usage.completion_tokens == 12
        else:
            resp = client.completions.create(model=MODEL, prompt="disaggregate me " * 20, max_tokens=12)
            assert resp.usage.completion_tokens == 12
    assert worker_requests(cluster.prefill) == 2
    assert worker_requests(cluster.decode) == 2
    assert frontend_metric(cluster, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 2
    assert frontend_metric(cluster, "dynamo_frontend_kv_transfer_bytes_total") > 0


def test_prefill_worker_death_falls_back_to_local_prefill(cluster):
    cluster.prefill.kill()
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
    for _ in range(3):  # before and after discovery notices
        assert client.completions.create(model=MODEL, prompt="still works", max_tokens=5).usage.completion_tokens == 5
    wait_until(lambda: cluster.worker_count(MODEL) == 1, 25, "prefill worker to leave discovery")
    assert client.completions.create(model=MODEL, prompt="still works", max_tokens=5).usage.completion_tokens == 5
    assert frontend_metric(cluster, "dynamo_frontend_local_prefills_total", {"model": MODEL}) >= 1


def test_enforced_disaggregation_refuses_without_prefill(cluster):
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port), "--enforce-disagg"])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_get(url + "/v1/models")[0] == 200 and b"tiny" in http_get(url + "/v1/models")[1], 60,
               "enforcing frontend")
    resp = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=30)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "prefill_unavailable"
    proc.stop()

"""Disaggregated prefill/decode with mocker workers: the frontend sends the prompt to a
prefill worker, then the decode worker continues from the transferred KV; failures
fall back to local prefill unless disaggregation is enforced; conditional
disaggregation prefills short prompts, and prompts that find the prefill pool busy,
locally. Each test builds the state it needs."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def worker_requests(proc) -> float:
    """Requests the worker served to the end: all it handled, less those cancelled or failed."""
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return sum(sign * (metric_value(text, f"dynamo_component_{name}_total") or 0.0)
               for sign, name in ((1, "requests"), (-1, "cancellation"), (-1, "errors")))


def disagg_cluster(tmp, model, *frontend_args: str) -> Cluster:
    c = Cluster(tmp, model, "file")
    c.prefill = c.mocker("--speedup-ratio", "50", "--disaggregation-mode", "prefill")
    c.decode = c.mocker("--speedup-ratio", "50", "--is-decode-worker")
    c.frontend(*frontend_args)
    c.wait_workers(MODEL, 2)
    return c


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = disagg_cluster(tmp_path_factory.mktemp("disagg"), tiny_model)
    try:
        yield c
    finally:
        c.stop()


def frontend_metric(url, name, labels=None):
    return metric_value(http_get(url + "/metrics")[1].decode(), name, labels) or 0.0


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)


def test_requests_are_prefilled_remotely(cluster):
    client = client_for(cluster.base_url)
    before = worker_requests(cluster.prefill), worker_requests(cluster.decode)
    stages = {stage: frontend_metric(cluster.base_url, "dynamo_frontend_stage_duration_seconds_count",
                                     {"stage": stage}) for stage in ("route", "transport_roundtrip")}
    for stream in (False, True):
        if stream:
            parts = list(client.completions.create(model=MODEL, prompt="disaggregate me " * 20, max_tokens=12,
                                                   stream=True, stream_options={"include_usage": True}))
            assert parts[-1].usage.completion_tokens == 12
        else:
            resp = client.completions.create(model=MODEL, prompt="disaggregate me " * 20, max_tokens=12)
            assert resp.usage.completion_tokens == 12
    assert worker_requests(cluster.prefill) == before[0] + 2
    assert worker_requests(cluster.decode) == before[1] + 2
    assert frontend_metric(cluster.base_url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 2
    assert frontend_metric(cluster.base_url, "dynamo_frontend_kv_transfer_bytes_total") > 0
    # Dynamo's stage series name the two phases: each request routed and dispatched once to each pool
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    for phase in ("prefill", "decode"):
        for stage in ("route", "dispatch"):
            assert metric_value(text, "dynamo_frontend_stage_requests", {"stage": stage, "phase": phase}) == 0
    for stage, seen in stages.items():  # two requests, each through both pools
        assert metric_value(text, "dynamo_frontend_stage_duration_seconds_count", {"stage": stage}) == seen + 4


def test_the_model_is_ready_with_its_worker_types_per_namespace(cluster):
    """GET /v1/models/{id}/ready, Dynamo's readiness report: one prefill and one decode worker here."""
    status, body = http_get(cluster.base_url + f"/v1/models/{MODEL}/ready")
    report = json.loads(body)
    assert status == 200 and report["model"] == MODEL and report["ready"] is True
    [(namespace, detail)] = report["namespaces"].items()
    assert namespace == "dynamo" and detail["present"] == ["decode", "prefill"] and detail["ready"] is True
    assert {k: v["workers"] for k, v in detail["worker_types"].items()} == {"decode": 1, "prefill": 1}
    assert detail["missing_worker_types"] == []
    assert http_get(cluster.base_url + "/v1/models/no-such-model/ready")[0] == 404


def test_the_response_names_the_prefill_and_the_decode_worker(cluster):
    """nvext.extra_fields ["worker_id", "timing"]: the prefill worker that prefilled it and the decode
    worker that streamed it, as /health lists them; the TTFT split where the prefill began."""
    instances = json.loads(http_get(cluster.base_url + "/health")[1])["instances"]
    ids = {i["worker_type"]: i["instance_id"] for i in instances}
    resp = httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": "disaggregate me " * 20, "max_tokens": 4,
        "nvext": {"extra_fields": ["worker_id", "timing"]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["nvext"]["worker_id"] == {"prefill_worker_id": ids["prefill"], "prefill_dp_rank": 0,
                                                 "decode_worker_id": ids["decode"], "decode_dp_rank": 0}, ids
    timing = resp.json()["nvext"]["timing"]  # the prefill began when the prefill worker's stream opened
    assert timing["prefill_wait_time_ms"] + timing["prefill_time_ms"] == pytest.approx(timing["ttft_ms"], abs=0.01)
    # Dynamo's per-worker gauges: the TTFT on the prefill worker, the inter-token latency on the decode one.
    prefill = {"worker_id": str(ids["prefill"]), "worker_type": "prefill"}
    assert frontend_metric(cluster.base_url, "dynamo_frontend_worker_last_time_to_first_token_seconds", prefill) > 0
    decode = {"worker_id": str(ids["decode"]), "worker_type": "decode"}
    assert frontend_metric(cluster.base_url, "dynamo_frontend_worker_last_inter_token_latency_seconds", decode) > 0


def test_query_instance_id_names_the_prefill_worker_too(cluster):
    """nvext.annotations ["query_instance_id"] with prefill workers: the decode worker as the
    `worker_instance_id` event, and both workers with the prompt's ids in a response nvext (a chunk
    of its own when streamed); neither worker is asked to work."""
    instances = json.loads(http_get(cluster.base_url + "/health")[1])["instances"]
    ids = {i["worker_type"]: i["instance_id"] for i in instances}
    before = worker_requests(cluster.prefill), worker_requests(cluster.decode)
    ask = {"model": MODEL, "prompt": "disaggregate me " * 20, "max_tokens": 4,
           "nvext": {"annotations": ["query_instance_id"]}}
    streamed = httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={**ask, "stream": True})
    assert streamed.status_code == 200, streamed.text
    events = dict(part.split("\n: ", 1) for part in streamed.text.split("\n\n") if part.startswith("event: "))
    assert json.loads(events["event: worker_instance_id"]) == str(ids["decode"])
    (chunk,) = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    unary = httpx.post(cluster.base_url + "/v1/completions", timeout=60, json=ask).json()
    for nvext in (chunk["nvext"], unary["nvext"]):
        assert nvext["worker_id"] == {"prefill_worker_id": ids["prefill"], "decode_worker_id": ids["decode"]}
        assert nvext["token_ids"] == json.loads(events["event: token_data"]) and len(nvext["token_ids"]) > 20
    assert chunk["choices"] == unary["choices"] == []
    assert (worker_requests(cluster.prefill), worker_requests(cluster.decode)) == before


def test_conditional_disaggregation_prefills_short_prompts_locally(cluster):
    """`--router-conditional-disagg` with a 64-token threshold, beside the plain frontend on the
    same workers: a short prompt never reaches the prefill worker, a long one does."""
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--router-conditional-disagg", "--router-conditional-disagg-config",
                                             json.dumps({"eff_isl_threshold": 64})])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: b'"tiny"' in http_get(url + "/v1/models")[1], 60, "conditional frontend to list the model")
        wait_until(lambda: sum(1 for i in json.loads(http_get(url + "/health")[1])["instances"]
                               if i.get("model") == MODEL) == 2, 60, "both workers at the conditional frontend")
        client = client_for(url)
        prefill_before, decode_before = worker_requests(cluster.prefill), worker_requests(cluster.decode)
        short = client.completions.create(model=MODEL, prompt=[7] * 20, max_tokens=4)
        assert short.usage.prompt_tokens == 20 and short.usage.completion_tokens == 4
        assert worker_requests(cluster.prefill) == prefill_before
        assert worker_requests(cluster.decode) == decode_before + 1
        assert frontend_metric(url, "dynamo_frontend_local_prefills_total",
                               {"model": MODEL, "reason": "short_prompt"}) == 1
        assert frontend_metric(url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 0
        long = client.completions.create(model=MODEL, prompt=[9] * 100, max_tokens=4)
        assert long.usage.completion_tokens == 4
        assert worker_requests(cluster.prefill) == prefill_before + 1
        assert worker_requests(cluster.decode) == decode_before + 2
        assert frontend_metric(url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 1
        assert frontend_metric(url, "dynamo_frontend_local_prefills_total", {"model": MODEL}) == 1
        # the policy chose the decode worker: not a fallback
        assert frontend_metric(url, "dynamo_frontend_model_decode_only_fallback_total", {"model": MODEL}) == 0
    finally:
        proc.stop()


def decode_indexed_blocks(url: str) -> int:
    models = json.loads(http_get(url + "/health")[1]).get("router", {}).get("models", {})
    return sum((models.get(MODEL) or {}).get("indexed_blocks", {}).values() or [0])


def test_conditional_disaggregation_counts_only_uncached_tokens(cluster):
    """Dynamo's effective ISL is the prompt less the prefix cached on the decode worker: with
    KV routing and a 100-token threshold, a 220-token prompt whose first 192 tokens (3 blocks
    of 64) the decode worker already holds is prefilled there; a fresh 220-token prompt is not."""
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--router-mode", "kv", "--router-conditional-disagg",
                                             "--router-conditional-disagg-config",
                                             json.dumps({"eff_isl_threshold": 100})])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: sum(1 for i in json.loads(http_get(url + "/health")[1])["instances"]
                               if i.get("model") == MODEL) == 2, 60, "both workers at the KV-routing frontend")
        client = client_for(url)
        prefix = [100 + i for i in range(200)]
        prefill_before = worker_requests(cluster.prefill)
        first = client.completions.create(model=MODEL, prompt=prefix, max_tokens=2)
        assert first.usage.prompt_tokens == 200
        assert worker_requests(cluster.prefill) == prefill_before + 1  # nothing cached yet: remote
        wait_until(lambda: decode_indexed_blocks(url) >= 3, 30, "the decode worker's KV events for the prefix")
        cached = client.completions.create(model=MODEL, prompt=prefix + [50] * 20, max_tokens=2)
        assert cached.usage.prompt_tokens == 220
        assert cached.usage.prompt_tokens_details.cached_tokens == 192
        assert worker_requests(cluster.prefill) == prefill_before + 1
        assert frontend_metric(url, "dynamo_frontend_local_prefills_total",
                               {"model": MODEL, "reason": "cached_prefix"}) == 1
        fresh = client.completions.create(model=MODEL, prompt=[400 + i for i in range(220)], max_tokens=2)
        assert fresh.usage.prompt_tokens == 220
        assert worker_requests(cluster.prefill) == prefill_before + 2
        assert frontend_metric(url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 2
        assert frontend_metric(url, "dynamo_frontend_local_prefills_total", {"model": MODEL}) == 1
    finally:
        proc.stop()


def test_prefill_worker_death_falls_back_to_local_prefill(tiny_model, tmp_path):
    """Every request after the prefill worker dies is served decode-only, and counted so in Dynamo's
    `dynamo_frontend_model_decode_only_fallback_total` (0 while the prefill worker serves)."""
    c = disagg_cluster(tmp_path, tiny_model)
    fallbacks = {"model": MODEL}
    try:
        client = client_for(c.base_url)
        assert client.completions.create(model=MODEL, prompt="remote", max_tokens=5).usage.completion_tokens == 5
        assert frontend_metric(c.base_url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 1
        assert frontend_metric(c.base_url, "dynamo_frontend_model_decode_only_fallback_total", fallbacks) == 0
        c.prefill.kill()
        for _ in range(3):  # before and after discovery notices
            assert client.completions.create(model=MODEL, prompt="still works", max_tokens=5).usage.completion_tokens == 5
        wait_until(lambda: c.worker_count(MODEL) == 1, 25, "prefill worker to leave discovery")
        assert client.completions.create(model=MODEL, prompt="still works", max_tokens=5).usage.completion_tokens == 5
        assert frontend_metric(c.base_url, "dynamo_frontend_local_prefills_total", {"model": MODEL}) >= 1
        assert worker_requests(c.decode) == 5
        assert frontend_metric(c.base_url, "dynamo_frontend_model_decode_only_fallback_total", fallbacks) == 4
    finally:
        c.stop()


@pytest.mark.parametrize("flag", ["--enforce-disagg", "--no-decode-fallback"])  # ours, newer Dynamo's spelling
def test_enforced_disaggregation_refuses_without_prefill(tiny_model, tmp_path, flag):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "50", "--is-decode-worker")
        c.frontend(flag)
        c.wait_workers(MODEL, 1)
        resp = httpx.post(c.base_url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2},
                          timeout=30)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "prefill_unavailable"
        # Not ready while its requests get that 503: prefill is the missing worker type.
        status, body = http_get(c.base_url + f"/v1/models/{MODEL}/ready")
        report = json.loads(body)
        assert (status, report["ready"]) == (503, False)
        (namespace,) = report["namespaces"].values()
        assert namespace["missing_worker_types"] == ["prefill"]
        assert namespace["worker_types"] == {"decode": {"workers": 1, "needs": ["prefill"]}}
    finally:
        c.stop()



def worker_metric(proc, name: str, labels: dict | None = None) -> float:
    return metric_value(http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode(), name, labels) or 0.0


def test_client_gone_during_remote_prefill_cancels_it_and_never_reaches_decode(tiny_model, tmp_path):
    """The client hangs up while the prefill worker still computes (slow chunked prefill): the
    prefill worker counts the request cancelled and frees it, the decode worker is never
    asked, the frontend forgets it; the workers serve the next request normally."""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.prefill = c.mocker("--speedup-ratio", "0.02", "--max-num-batched-tokens", "64",
                             "--disaggregation-mode", "prefill")
        c.decode = c.mocker("--speedup-ratio", "50", "--is-decode-worker")
        c.frontend()
        c.wait_workers(MODEL, 2)
        body = json.dumps({"model": MODEL, "prompt": [11 + i % 3000 for i in range(1500)], "max_tokens": 50,
                           "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", c.http_port), timeout=30) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            wait_until(lambda: worker_metric(c.prefill, "dynamo_component_inflight_requests") == 1, 30,
                       "the prefill worker to hold the request")
        # Hung up mid-prefill.
        wait_until(lambda: worker_metric(c.prefill, "dynamo_component_cancellation_total") == 1,
                   30, "the prefill worker to see the cancel")
        wait_until(lambda: worker_metric(c.prefill, "dynamo_component_inflight_requests") == 0, 15,
                   "the prefill worker to free the request")
        assert worker_metric(c.prefill, "dynamo_mocker_running_requests") == 0
        wait_until(lambda: frontend_metric(c.base_url, "dynamo_frontend_inflight_requests", {"model": MODEL}) == 0,
                   15, "the frontend to finish with the request")
        assert frontend_metric(c.base_url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 0
        assert worker_metric(c.decode, "dynamo_component_requests_total") == 0  # none reached it
        assert worker_metric(c.decode, "dynamo_component_inflight_requests") == 0
        # Nothing stuck: the next request goes through both workers.
        resp = client_for(c.base_url).completions.create(model=MODEL, prompt="after the hang-up", max_tokens=3)
        assert resp.usage.completion_tokens == 3
        assert worker_requests(c.prefill) == 1 and worker_requests(c.decode) == 1
    finally:
        c.stop()


def test_conditional_disaggregation_prefills_locally_while_the_prefill_pool_is_busy(tiny_model, tmp_path):
    """`max_inflight_prefills_per_worker: 1`: while the only prefill worker computes one long
    prompt (slow chunked prefill), a second long prompt is prefilled on the decode worker
    ("prefill_pool_busy") instead of queueing behind it; both answer in full."""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.prefill = c.mocker("--speedup-ratio", "0.05", "--max-num-batched-tokens", "64",
                             "--disaggregation-mode", "prefill")  # ~0.35 s per 64-token chunk: ~5.6 s for 1000
        c.decode = c.mocker("--speedup-ratio", "50", "--is-decode-worker")
        c.frontend("--router-conditional-disagg", "--router-conditional-disagg-config",
                   json.dumps({"eff_isl_threshold": 64, "max_inflight_prefills_per_worker": 1}))
        c.wait_workers(MODEL, 2)
        client = client_for(c.base_url)
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.completions.create, model=MODEL, prompt=[11 + i for i in range(1000)],
                                max_tokens=5)
            wait_until(lambda: first.done() or worker_metric(c.prefill, "dynamo_component_inflight_requests") == 1,
                       30, "the prefill worker to hold the first prompt")
            assert not first.done(), "the first prompt finished before the second could find the pool busy"
            second = client.completions.create(model=MODEL, prompt=[2000 + i for i in range(1000)], max_tokens=5)
            answers = (first.result(timeout=120), second)
        for answer in answers:
            assert answer.usage.prompt_tokens == 1000 and answer.usage.completion_tokens == 5
            assert answer.choices[0].finish_reason == "length"
        assert frontend_metric(c.base_url, "dynamo_frontend_local_prefills_total",
                               {"model": MODEL, "reason": "prefill_pool_busy"}) == 1
        assert frontend_metric(c.base_url, "dynamo_frontend_local_prefills_total", {"model": MODEL}) == 1
        assert frontend_metric(c.base_url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 1
        assert worker_requests(c.prefill) == 1 and worker_requests(c.decode) == 2
    finally:
        c.stop()

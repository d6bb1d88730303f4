"""Busy thresholds end to end. When every worker is over `--active-decode-blocks-threshold`:
- with the router queue off (`--router-queue-max-requests 0`, NVIDIA Dynamo's default), the
  frontend answers 503 with an OpenAI error at once, and serves again once load drops;
- with the router queue (our default), the request waits in the router and is served as
  soon as the load drops, within its deadline.
The admin API (`GET/POST /busy_threshold`, NVIDIA Dynamo's) reads and changes them on the live
frontend: raised, the request refused a moment ago is served while the worker is still as busy;
bad values are 400s; a set under round-robin or for an unknown model is a 404; and
`DYN_DISABLE_FRONTEND_ADMIN_API` leaves the routes out. The Batch API's requests wait behind clients'."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until
from tests.router.e2e_helpers import worker_requests

pytestmark = pytest.mark.e2e

MODEL = "tiny"
LONG_PROMPT = list(range(100, 100 + 16 * 8))  # 8 blocks = 12.5% of the cache, over the 10% threshold


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("busy"), tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "1", "--num-gpu-blocks-override", "64", "--block-size", "16")
        flags = ("--router-mode", "kv", "--active-decode-blocks-threshold", "0.1")
        c.frontend(*flags, "--router-queue-max-requests", "0")
        c.wait_workers(MODEL, 1)
        c.no_queue_url = c.base_url
        c.frontend("--router-mode", "round-robin")
        c.round_robin_url = c.base_url
        c.frontend(*flags, env={"DYN_DISABLE_FRONTEND_ADMIN_API": "1"})
        c.no_admin_url = c.base_url
        c.frontend(*flags, "--router-queue-timeout-secs", "60")
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def _worker_kept_busy(url: str):
    """A long stream holds the worker over the threshold until the block exits (closing it cancels)."""
    with httpx.Client(timeout=90) as http:
        with http.stream("POST", url, json={"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 400,
                                            "stream": True}) as busy:
            assert busy.status_code == 200
            lines = busy.iter_lines()  # keep the iterator: dropping it closes the response
            next(lines)
            yield http


def test_all_workers_busy_is_503_then_recovers(cluster):
    url = cluster.no_queue_url + "/v1/completions"
    with _worker_kept_busy(url) as http:
        resp = http.post(url, json={"model": MODEL, "prompt": "one more", "max_tokens": 2})
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error["code"] == "all_workers_busy" and error["type"] == "service_unavailable"
    # the long request was cancelled when its stream closed: the worker is free again
    wait_until(lambda: httpx.post(url, json={"model": MODEL, "prompt": "again", "max_tokens": 2},
                                  timeout=60).status_code == 200, 30, "the frontend to accept requests again")


def _queue(cluster) -> dict:
    return json.loads(http_get(cluster.base_url + "/health")[1])["router"]["queue"]


def test_all_workers_busy_waits_in_the_router_queue(cluster):
    url = cluster.base_url + "/v1/completions"
    result: dict = {}
    with _worker_kept_busy(url):
        def queued() -> None:  # its own connection: it outlives the busy stream's client
            result["resp"] = httpx.post(url, json={"model": MODEL, "prompt": "one more", "max_tokens": 2}, timeout=90)

        waiter = threading.Thread(target=queued)
        waiter.start()
        wait_until(lambda: _queue(cluster)["pending"] == 1, 30, "the request to wait in the router queue")
        assert "resp" not in result  # held, not refused
    # closing the long stream cancels it: the worker frees up and the queued request runs
    waiter.join(60)
    assert not waiter.is_alive()
    assert result["resp"].status_code == 200, result["resp"].text
    assert result["resp"].json()["choices"][0]["text"] is not None
    stats = _queue(cluster)
    assert stats["pending"] == 0 and stats["queued_total"] >= 1 and stats["timed_out"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_clients_that_leave_the_router_queue_give_their_places_up(cluster, stream):
    """Three clients give up while queued: their places are free at once (not at the queue's 60 s
    deadline, nor when the worker frees up), and none of them is sent to the worker afterwards."""
    url = cluster.base_url + "/v1/completions"
    worker = cluster.procs[0]  # the one mocker
    wait_until(lambda: _inflight(worker) == 0, 30, "the worker to finish earlier tests' streams")
    before = worker_requests(worker)
    with _worker_kept_busy(url):
        clients = [httpx.AsyncClient(timeout=90) for _ in range(3)]

        async def leave_while_queued() -> None:
            calls = [asyncio.ensure_future(c.post(url, json={"model": MODEL, "prompt": f"gone {i}", "max_tokens": 2,
                                                             "stream": stream}))
                     for i, c in enumerate(clients)]
            deadline = time.monotonic() + 30
            while _queue(cluster)["pending"] < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert _queue(cluster)["pending"] == 3
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            for c in clients:
                await c.aclose()

        asyncio.run(leave_while_queued())
        wait_until(lambda: _queue(cluster)["pending"] == 0, 5, "the abandoned places to be given up")
        assert _inflight(worker) == 1  # given up while the worker is still busy, not once it freed up
    served = httpx.post(url, json={"model": MODEL, "prompt": "after", "max_tokens": 2}, timeout=90)
    assert served.status_code == 200, served.text
    time.sleep(0.5)  # an abandoned request sent late would land now
    wait_until(lambda: _inflight(worker) == 0, 30, "the busy stream to end")
    assert worker_requests(worker) - before == 2  # the busy stream and "after": none of the three


def _inflight(worker) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_inflight_requests", {"dynamo_endpoint": "generate"}) or 0.0


def test_priorities_reorder_the_router_queue(cluster):
    """Three requests wait behind a busy worker; each one served keeps it busy until it ends, so
    they finish in the queue's order: strict tier (nvext), then the priority jump (header), then
    the oldest."""
    url = cluster.base_url + "/v1/completions"
    finished: list[tuple[str, int]] = []

    def send(name: str, seed: int, headers: dict, nvext: dict | None) -> threading.Thread:
        body = {"model": MODEL, "prompt": [seed + i for i in range(16 * 8)], "max_tokens": 20}
        if nvext:
            body["nvext"] = nvext
        thread = threading.Thread(target=lambda: finished.append(
            (name, httpx.post(url, json=body, headers=headers, timeout=90).status_code)))
        thread.start()
        return thread

    with _worker_kept_busy(url):
        threads = []
        for n, (name, headers, nvext) in enumerate([
                ("oldest", {}, None), ("jump", {"x-dynamo-request-priority": "30"}, None),
                ("tier", {}, {"agent_hints": {"strict_priority": 1}})]):
            threads.append(send(name, 1000 * (n + 1), headers, nvext))
            wait_until(lambda n=n: _queue(cluster)["pending"] == n + 1, 30, f"{name} to wait in the router queue")
    for thread in threads:
        thread.join(90)
    assert finished == [("tier", 200), ("jump", 200), ("oldest", 200)]


def test_batch_requests_wait_behind_a_client_that_came_after_them(cluster):
    """The Batch API's requests are the router queue's lowest tier: three wait behind the busy worker, a
    client's request sent after them is served before any of them (each served one keeps the worker busy
    until it ends, so they run one at a time)."""
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0)
    lines = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": [1100 + 500 * i + j for j in range(16 * 8)], "max_tokens": 40}}
             for i in range(3)]
    source = client.files.create(file=("b.jsonl", io.BytesIO("\n".join(map(json.dumps, lines)).encode())),
                                 purpose="batch")
    url = cluster.base_url + "/v1/completions"
    result: dict = {}
    with _worker_kept_busy(url):
        batch = client.batches.create(input_file_id=source.id, endpoint="/v1/completions", completion_window="24h")
        wait_until(lambda: _queue(cluster)["pending"] == 3, 30, "the batch's requests to wait in the router queue")
        waiter = threading.Thread(target=lambda: result.update(resp=httpx.post(url, timeout=90, json={
            "model": MODEL, "prompt": [2600 + j for j in range(16 * 8)], "max_tokens": 40})))
        waiter.start()
        wait_until(lambda: _queue(cluster)["pending"] == 4, 30, "the client's request to wait too")
    waiter.join(90)
    assert result["resp"].status_code == 200, result["resp"].text
    # First served: the batch has at most one answer (its first, if this thread was slow to look).
    assert client.batches.retrieve(batch.id).request_counts.completed <= 1
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.batches.retrieve(batch.id).request_counts.completed == 3


def test_malformed_priority_is_a_400(cluster):
    resp = httpx.post(cluster.base_url + "/v1/completions", timeout=30, json={
        "model": MODEL, "prompt": "x", "max_tokens": 2, "nvext": {"agent_hints": {"strict_priority": -1}}})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "nvext.agent_hints.strict_priority"


def _thresholds(decode=None, tokens=None, frac=None, model: str = MODEL) -> dict:
    return {"model": model, "active_decode_blocks_threshold": decode, "active_prefill_tokens_threshold": tokens,
            "active_prefill_tokens_threshold_frac": frac}


def test_busy_thresholds_are_read_and_listed(cluster):
    url = cluster.no_queue_url + "/busy_threshold"
    read = httpx.post(url, json={"model": MODEL}, timeout=30).json()
    assert read["active_decode_blocks_threshold"] == 0.1 and httpx.get(url, timeout=30).json() == {"thresholds": [read]}
    assert httpx.post(url, json={"model": "nope"}, timeout=30).json() == _thresholds(model="nope")
    listed = httpx.get(cluster.round_robin_url + "/busy_threshold", timeout=30).json()
    assert listed == {"thresholds": [_thresholds()]}  # no busy detection under round-robin


def test_a_threshold_raised_live_serves_what_it_refused(cluster):
    url = cluster.no_queue_url + "/v1/completions"
    admin = cluster.no_queue_url + "/busy_threshold"
    one_more = {"model": MODEL, "prompt": "one more", "max_tokens": 2}
    # Earlier tests' load, as the worker last reported it, may still hold it over the threshold.
    wait_until(lambda: httpx.post(url, json=one_more, timeout=60).status_code == 200, 30, "the worker to be free")
    try:
        with _worker_kept_busy(url) as http:
            assert http.post(url, json=one_more).status_code == 503
            raised = http.post(admin, json={"model": MODEL, "active_decode_blocks_threshold": 0.9,
                                            "active_prefill_tokens_threshold": 100000})
            assert raised.status_code == 200 and raised.json() == _thresholds(0.9, 100000)
            resp = http.post(url, json=one_more)  # the long stream still holds its blocks
            assert resp.status_code == 200, resp.text
            lowered = http.post(admin, json={"model": MODEL, "active_decode_blocks_threshold": 0.1})
            assert lowered.json() == _thresholds(0.1, 100000)  # the token threshold it left out stays
            assert http.post(url, json=one_more).status_code == 503
    finally:
        httpx.post(admin, json={"model": MODEL, "active_decode_blocks_threshold": 0.1}, timeout=30)


@pytest.mark.parametrize("body, status, param", [
    ({"model": MODEL, "active_decode_blocks_threshold": 1.5}, 400, "active_decode_blocks_threshold"),
    ({"model": MODEL, "active_prefill_tokens_threshold": -1}, 400, "active_prefill_tokens_threshold"),
    ({"model": MODEL, "active_prefill_tokens_threshold": 2.5}, 400,
     "active_prefill_tokens_threshold"),  # not a token count
    ({"model": MODEL, "active_prefill_tokens_threshold_frac": "half"}, 400, "active_prefill_tokens_threshold_frac"),
    ({"active_decode_blocks_threshold": 0.5}, 400, "model"),  # which model?
    ({"model": "", "active_decode_blocks_threshold": 0.5}, 400, "model"),
    ({"model": "nope", "active_decode_blocks_threshold": 0.5}, 404, "model"),
    (b"{not json", 400, None),
])
def test_bad_threshold_requests_are_named_errors(cluster, body, status, param):
    url = cluster.no_queue_url + "/busy_threshold"
    before = httpx.post(url, json={"model": MODEL}, timeout=30).json()
    resp = httpx.post(url, content=body, timeout=30) if isinstance(body, bytes) else httpx.post(url, json=body,
                                                                                                timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["message"]
    assert httpx.post(url, json={"model": MODEL}, timeout=30).json() == before  # nothing changed


def test_thresholds_cannot_be_set_without_kv_routing_nor_with_the_admin_api_off(cluster):
    resp = httpx.post(cluster.round_robin_url + "/busy_threshold", timeout=30,
                      json={"model": MODEL, "active_decode_blocks_threshold": 0.5})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "busy_thresholds_unavailable"
    for method in ("GET", "POST"):
        resp = httpx.request(method, cluster.no_admin_url + "/busy_threshold", json={"model": MODEL}, timeout=30)
        assert resp.status_code == 404, resp.text

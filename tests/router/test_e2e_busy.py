"""Busy thresholds end to end. When every worker is over `--active-decode-blocks-threshold`:
- with the router queue off (`--router-queue-max-requests 0`, NVIDIA Dynamo's default), the
  frontend answers 503 with an OpenAI error at once, and serves again once load drops;
- with the router queue (our default), the request waits in the router and is served as
  soon as the load drops, within its deadline."""

from __future__ import annotations

import contextlib
import json
import threading

import httpx
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

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


def test_malformed_priority_is_a_400(cluster):
    resp = httpx.post(cluster.base_url + "/v1/completions", timeout=30, json={
        "model": MODEL, "prompt": "x", "max_tokens": 2, "nvext": {"agent_hints": {"strict_priority": -1}}})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "nvext.agent_hints.strict_priority"

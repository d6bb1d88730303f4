"""Graceful shutdown, as in Dynamo: a SIGTERMed frontend answers /health 503 while /live
stays 200, refuses new requests with 503 and lets admitted streams finish (bounded), then
exits 0; a SIGTERMed worker leaves discovery, keeps serving through the grace period,
drains what it holds and exits 0, so scaling down loses no request."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def stream_completion(base_url: str, max_tokens: int, on_chunk=None) -> tuple[list[str], dict | None]:
    body = {"model": MODEL, "prompt": "drain me", "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    finish, usage = [], None
    with httpx.Client(timeout=120) as client, client.stream("POST", base_url + "/v1/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        seen = 0
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                seen += 1
                if choice["finish_reason"]:
                    finish.append(choice["finish_reason"])
            if on_chunk is not None:
                on_chunk(seen)
    return finish, usage


@pytest.fixture()
def cluster(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file", {"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "2"})
    try:
        yield c
    finally:
        c.stop()


def test_frontend_drains_admitted_streams_and_refuses_new_ones(cluster):
    cluster.mocker("--speedup-ratio", "2")
    frontend = cluster.frontend(env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "120"})
    cluster.wait_workers(MODEL, 1)
    url = cluster.base_url
    seen: dict = {}

    def on_chunk(count: int) -> None:
        if count == 5 and not seen:
            frontend.popen.send_signal(signal.SIGTERM)
            wait_until(lambda: http_get(url + "/health")[0] == 503, 30, "/health 503 while draining")
            seen["health"] = json.loads(http_get(url + "/health")[1])
            seen["live"] = http_get(url + "/live")[0]
            resp = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "late", "max_tokens": 2},
                              timeout=30)
            seen["late"] = (resp.status_code, resp.json()["error"]["code"])

    finish, usage = stream_completion(url, 200, on_chunk)
    assert finish == ["length"] and usage["completion_tokens"] == 200
    assert seen["live"] == 200
    assert seen["health"]["status"] == "draining"
    assert seen["late"] == (503, "shutting_down")
    frontend.popen.wait(60)
    assert frontend.popen.returncode == 0, frontend.log()


def test_frontend_drain_is_bounded(cluster):
    cluster.mocker("--speedup-ratio", "0.5")
    frontend = cluster.frontend(env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1"})
    cluster.wait_workers(MODEL, 1)
    done = threading.Event()

    def stream() -> None:
        try:
            stream_completion(cluster.base_url, 1500)
        except (httpx.HTTPError, AssertionError):
            pass  # cut off at the drain deadline: expected
        done.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    wait_until(lambda: "draining" not in frontend.log() and _inflight(cluster) == 1, 60, "stream admitted")
    frontend.popen.send_signal(signal.SIGTERM)
    frontend.popen.wait(30)  # 1 s drain + teardown, far less than the 1500-token stream
    assert frontend.popen.returncode == 0, frontend.log()
    assert done.wait(30)
    assert "drain deadline passed with 1 request(s) in flight" in frontend.log()


def _inflight(cluster) -> float:
    from tests.fixtures.procs import metric_value
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_inflight_requests") or 0.0


class Load(threading.Thread):
    """Short streams back to back from 4 clients; every one must finish whole."""

    def __init__(self, base_url: str, clients: int = 4) -> None:
        super().__init__(daemon=True)
        self.base_url, self.clients = base_url, clients
        self.stop, self.ok, self.failures = threading.Event(), 0, []
        self.lock = threading.Lock()

    def one_client(self) -> None:
        while not self.stop.is_set():
            try:
                finish, usage = stream_completion(self.base_url, 24)
                good = finish == ["length"] and usage["completion_tokens"] == 24
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                good, finish = False, repr(exc)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(finish)

    def run(self) -> None:
        threads = [threading.Thread(target=self.one_client, daemon=True) for _ in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)


def test_worker_sigterm_under_load_loses_no_request(cluster):
    """Scale-down path: no migration configured, so only the drain keeps requests whole."""
    workers = [cluster.mocker("--speedup-ratio", "5"), cluster.mocker("--speedup-ratio", "5")]
    cluster.frontend()
    cluster.wait_workers(MODEL, 2)
    load = Load(cluster.base_url)
    load.start()
    try:
        wait_until(lambda: load.ok >= 8, 120, "load running")
        workers[0].popen.send_signal(signal.SIGTERM)
        cluster.wait_workers(MODEL, 1, timeout=30)
        workers[0].popen.wait(60)
        before = load.ok
        wait_until(lambda: load.ok >= before + 8, 120, "load continues on the survivor")
    finally:
        load.stop.set()
        load.join(180)
    assert workers[0].popen.returncode == 0, workers[0].log()
    assert load.failures == [], load.failures

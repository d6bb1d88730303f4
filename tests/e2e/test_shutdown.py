"""Graceful shutdown, as in Dynamo 1.6.1: a SIGTERMed frontend answers /health 503 while /live
stays 200 and refuses new requests with 503; after DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS it stops
listening while admitted streams run on to their end (then it exits 0); a second signal, or
DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS, ends them with a `shutting_down` error. A SIGTERMed worker
leaves discovery, lets what it holds run to completion within the grace period plus
DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS (a stream far longer than the grace period is finished, not
cut), and exits 0, so scaling down loses no request; past that limit it aborts the rest."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.load import Load, stream_completion
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


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


def test_frontend_lets_admitted_streams_outlive_its_http_window(cluster):
    """The window is 1 s, the stream ~12 s: past the window the port stops accepting connections (the load
    balancer moves on), a connection already open still gets 503 for a new request and /health 503, /live
    200, and the stream runs to its end, whole; the frontend exits 0 after it (Dynamo 1.6.1's behaviour). It
    leaves v1/frontends/ as it stops listening: its peers must not forward stored-object requests to it."""
    cluster.mocker("--speedup-ratio", "0.5")
    frontend = cluster.frontend(env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1"})
    cluster.wait_workers(MODEL, 1)
    url = cluster.base_url
    seen: dict = {}
    with httpx.Client(base_url=url, timeout=30) as kept:  # a keep-alive connection opened before the signal
        assert kept.get("/live").status_code == 200
        assert _replica_records(cluster), "the frontend registered as a replica"

        def on_chunk(count: int) -> None:
            if count == 5 and not seen:
                frontend.popen.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 60
                while _accepts_connections(cluster.http_port):  # /live on `kept` keeps its connection in use
                    assert time.monotonic() < deadline, "the frontend still listens past its window"
                    seen["live"] = kept.get("/live").status_code
                    time.sleep(0.1)
                wait_until(lambda: not _replica_records(cluster), 10, "the frontend to leave v1/frontends/")
                late = kept.post("/v1/completions", json={"model": MODEL, "prompt": "late", "max_tokens": 2})
                seen["late"] = (late.status_code, late.json()["error"]["code"])
                health = kept.get("/health")
                seen["health"] = (health.status_code, health.json()["status"])
                seen["live"] = kept.get("/live").status_code

        finish, usage = stream_completion(url, 600, on_chunk, timeout=180)
    assert finish == ["length"] and usage["completion_tokens"] == 600  # no shutting_down error at the window
    assert seen == {"live": 200, "late": (503, "shutting_down"), "health": (503, "draining")}
    assert frontend.popen.wait(60) == 0, frontend.log()
    assert "Timed out waiting for inflight inference requests to drain: 1 request(s)" in frontend.log()
    assert "ending 1 request(s)" not in frontend.log()


def _replica_records(cluster) -> list:
    """The v1/frontends/ records in the cluster's file discovery."""
    return [p for p in Path(cluster.env["DYN_FILE_KV"]).rglob("*") if p.is_file() and "frontends" in p.parts]


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Stream(threading.Thread):
    """A long streamed completion in the background, its SSE events as they come."""

    def __init__(self, url: str, max_tokens: int = 1500) -> None:
        super().__init__(daemon=True)
        self.url, self.max_tokens, self.events = url, max_tokens, []
        self.ended_at = 0.0  # time.monotonic() when the stream ended
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/completions", timeout=120, json={
                    "model": MODEL, "prompt": "a long story", "max_tokens": self.max_tokens, "stream": True,
                    "nvext": {"ignore_eos": True}}) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: {"):
                        self.events.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass
        self.ended_at = time.monotonic()


def test_a_second_signal_ends_the_drain_at_once(cluster):
    """Ctrl-C twice: the streams the drain let run on end at once, as what happened, a `shutting_down`
    error event: not a worker failure, so it is not migrated (the idle second worker gets nothing) and no
    worker is inhibited; the frontend exits 0 promptly."""
    workers = [cluster.mocker("--speedup-ratio", "0.5") for _ in range(2)]
    frontend = cluster.frontend("--router-mode", "round-robin", "--migration-limit", "3",
                                env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1"})
    cluster.wait_workers(MODEL, 2)
    stream = _Stream(cluster.base_url)
    wait_until(lambda: len(stream.events) >= 2, 60, "the stream under way")
    frontend.popen.send_signal(signal.SIGTERM)
    wait_until(lambda: "Timed out waiting for inflight inference requests" in frontend.log(), 30,
               "the drain past its HTTP window")
    assert frontend.alive() and stream.is_alive()  # ~30 s of stream left: the drain lets it run
    frontend.popen.send_signal(signal.SIGINT)
    frontend.popen.wait(15)  # far less than the stream's remaining ~25 s
    assert frontend.popen.returncode == 0, frontend.log()
    stream.join(30)
    assert "second signal: ending 1 request(s) in flight" in frontend.log()
    assert stream.events[-1].get("error", {}).get("code") == "shutting_down", stream.events[-1]
    assert "migrating" not in frontend.log() and "inhibited" not in frontend.log()
    assert sorted(_served(w) for w in workers) == [0, 1]  # the stream's worker only: nothing moved


def test_frontend_drain_is_bounded_by_the_runtime_timeout(cluster):
    """Where nothing SIGKILLs it, DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS (counted from the signal)
    bounds how long the frontend lingers on a stream; it then ends it with a `shutting_down` error."""
    cluster.mocker("--speedup-ratio", "0.5")
    frontend = cluster.frontend(env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1",
                                     "DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "3"})
    cluster.wait_workers(MODEL, 1)
    stream = _Stream(cluster.base_url)
    wait_until(lambda: len(stream.events) >= 2, 60, "the stream under way")
    signalled = time.monotonic()
    frontend.popen.send_signal(signal.SIGTERM)
    frontend.popen.wait(30)  # 3 s + teardown, far less than the 1500-token stream
    assert frontend.popen.returncode == 0, frontend.log()
    stream.join(30)
    assert stream.ended_at - signalled >= 2.5  # not cut at the 1 s window
    assert "drain bound (3 s) passed: ending 1 request(s) in flight" in frontend.log()
    assert stream.events[-1].get("error", {}).get("code") == "shutting_down", stream.events[-1]


def _served(worker) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    started = metric_value(text, "dynamo_component_inflight_requests", {"dynamo_endpoint": "generate"}) or 0.0
    return started + (metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0.0)


def _inflight(cluster) -> float:
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_inflight_requests") or 0.0


def test_worker_sigterm_under_load_loses_no_request(cluster):
    """Scale-down path: no migration configured, so only the drain keeps requests whole."""
    workers = [cluster.mocker("--speedup-ratio", "5"), cluster.mocker("--speedup-ratio", "5")]
    cluster.frontend()
    cluster.wait_workers(MODEL, 2)
    load = Load(cluster.base_url, clients=4, max_tokens=24, pause=0)
    load.start()
    try:
        wait_until(lambda: load.ok >= 8, 120, "load running")
        workers[0].popen.send_signal(signal.SIGTERM)
        cluster.wait_workers(MODEL, 1, timeout=30)
        workers[0].popen.wait(60)
        before = load.ok
        wait_until(lambda: load.ok >= before + 8, 120, "load continues on the survivor")
    finally:
        load.finish()
    assert workers[0].popen.returncode == 0, workers[0].log()
    assert load.failures == [], load.failures


def _sigterm_at_chunk(proc, at: int = 5):
    def on_chunk(count: int) -> None:
        if count == at and proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
    return on_chunk


def test_worker_sigterm_finishes_a_stream_far_longer_than_the_grace_period(cluster):
    """The cluster's grace period is 2 s; the stream runs ~6 s more after SIGTERM, with no migration:
    only the drain (Dynamo's: grace, then up to DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS) keeps it whole."""
    worker = cluster.mocker("--speedup-ratio", "0.5")
    cluster.frontend()
    cluster.wait_workers(MODEL, 1)
    finish, usage = stream_completion(cluster.base_url, 300, _sigterm_at_chunk(worker), timeout=180)
    assert finish == ["length"] and usage["completion_tokens"] == 300
    assert worker.popen.wait(60) == 0, worker.log()
    assert "draining 1 request(s) in flight" in worker.log()
    assert "aborting them" not in worker.log()


def test_worker_drain_is_bounded_by_the_runtime_timeout(cluster):
    worker = cluster.mocker("--speedup-ratio", "0.5", env={"DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "0"})
    cluster.frontend()
    cluster.wait_workers(MODEL, 1)
    with pytest.raises((AssertionError, httpx.HTTPError)):  # cut at 2 s of a ~30 s stream: an error event
        stream_completion(cluster.base_url, 1500, _sigterm_at_chunk(worker), timeout=120)
    assert worker.popen.wait(60) == 0, worker.log()
    assert "1 request(s) still running after 2s; aborting them" in worker.log()


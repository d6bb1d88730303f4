"""Graceful shutdown, as in Dynamo: a SIGTERMed frontend answers /health 503 while /live
stays 200, refuses new requests with 503 and lets admitted streams finish (bounded), then
exits 0; a SIGTERMed worker leaves discovery, lets what it holds run to completion within the grace
period plus DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS (a stream far longer than the grace period is
finished, not cut), and exits 0, so scaling down loses no request; past that limit it aborts the rest."""

from __future__ import annotations

import json
import signal
import threading

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


def test_frontend_drain_is_bounded(cluster):
    """A stream far longer than the frontend's drain is ended at its deadline as what happened, a
    `shutting_down` error event: not a worker failure, so it is not migrated (the idle second worker
    gets nothing) and no worker is inhibited."""
    workers = [cluster.mocker("--speedup-ratio", "0.5") for _ in range(2)]
    frontend = cluster.frontend("--router-mode", "round-robin", "--migration-limit", "3",
                                env={"DYN_HTTP_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1"})
    cluster.wait_workers(MODEL, 2)
    events: list[dict] = []
    done = threading.Event()

    def stream() -> None:
        try:
            with httpx.stream("POST", cluster.base_url + "/v1/completions", timeout=60, json={
                    "model": MODEL, "prompt": "a long story", "max_tokens": 1500, "stream": True,
                    "nvext": {"ignore_eos": True}}) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass
        done.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    wait_until(lambda: len(events) >= 2, 60, "the stream under way")
    frontend.popen.send_signal(signal.SIGTERM)
    frontend.popen.wait(30)  # 1 s drain + teardown, far less than the 1500-token stream
    assert frontend.popen.returncode == 0, frontend.log()
    assert done.wait(30)
    assert "drain deadline passed with 1 request(s) in flight" in frontend.log()
    assert events[-1].get("error", {}).get("code") == "shutting_down", events[-1]
    assert "migrating" not in frontend.log() and "inhibited" not in frontend.log()
    assert sorted(_served(w) for w in workers) == [0, 1]  # the stream's worker only: nothing moved


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


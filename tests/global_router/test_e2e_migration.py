"""A stream's life through the global router: a client that goes away cancels the pool worker's generation
(frontend -> global router -> local router -> worker); a pool worker killed mid-stream breaks the local
router's stream, the global router relays the break with its code, and the frontend (--migration-limit)
resumes the request through the global router, which sends it to the pool again, whose router picks the
surviving worker. The client sees one seamless stream of every token. A pool scaled to zero holds requests at
its router (`--wait-for-workers-secs`) until a worker comes back."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest

from tests.e2e.test_migration_limits import stream_with_one_kill
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
POOL = "pool-m"
PLAN = {"mode": "agg", "num_agg_pools": 1, "agg_pool_dynamo_namespaces": [POOL],
        "agg_pool_selection_strategy": {"ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 1,
                                        "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1,
                                        "agg_pool_mapping": [[0]]}}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("global-router-migration"), tiny_model, "file")
    try:
        c.workers = [c.mocker("--speedup-ratio", "2", "--endpoint", f"dyn://{POOL}.backend.generate")
                     for _ in range(2)]
        c.router_port = free_port()  # type: ignore[attr-defined]
        c.start("dynamo.router", ["--endpoint", f"{POOL}.backend.generate", "--router-block-size", "16",
                                  "--wait-for-workers-secs", "120"],
                env={"DYN_SYSTEM_PORT": str(c.router_port)}, name="router")
        plan = c.tmp / "plan.json"
        plan.write_text(json.dumps(PLAN))
        c.start("dynamo.global_router", ["--config", str(plan), "--model-name", MODEL, "--model-path",
                                         str(tiny_model), "--namespace", "front"], name="global-router")
        c.frontend("--namespace", "front", "--migration-limit", "2")
        c.wait_workers(MODEL, 1, timeout=120)
        # The global router registers once discovery shows the pool's router and a worker; the local router's own
        # view may lag that by a moment (a loaded machine), and it waits for it to catch up instead of answering
        # no_workers: the very first request is served.
        first = httpx.post(c.base_url + "/v1/completions", json={"model": MODEL, "prompt": "warm", "max_tokens": 1},
                           timeout=60)
        assert first.status_code == 200, first.text
        yield c
    finally:
        c.stop()


def cancelled(worker) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_cancellation_total", {"dynamo_endpoint": "generate"}) or 0.0


def test_a_client_going_away_cancels_the_pool_workers_generation(cluster):
    before = sum(cancelled(w) for w in cluster.workers)
    body = {"model": MODEL, "prompt": "cancel me", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", cluster.base_url + "/v1/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        for _ in range(5):
            next(lines)
    # closed after 5 events of 1,500 tokens: the worker ends the request as cancelled, not as a success
    wait_until(lambda: sum(cancelled(w) for w in cluster.workers) == before + 1, 30,
               "the pool worker's request cancelled")


def test_a_pool_worker_killed_mid_stream_is_migrated_through_the_global_router(cluster):
    body = {"model": MODEL, "prompt": "migrate me please", "max_tokens": 300, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    pieces, finish, usage, killed = stream_with_one_kill(cluster, body)
    assert killed is not None
    assert finish == ["length"] and usage["completion_tokens"] == 300
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    assert metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"}) == 1
    assert next(w for w in cluster.workers if w is not killed).alive()


def _waiting_at_pool_router(cluster) -> float:
    text = http_get(f"http://127.0.0.1:{cluster.router_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_router_requests_waiting_for_workers") or 0.0


def test_a_pool_scaled_to_zero_holds_requests_until_a_worker_comes_back(cluster):
    """Last in the module: it stops the pool's workers. The pool's router (--wait-for-workers-secs) holds the
    request the global router sends it, counts it, and serves it on the worker that registers next."""
    for worker in cluster.workers:
        if worker.alive():
            worker.kill(signal.SIGTERM)  # unregisters, as a scale-down does
    for worker in cluster.workers:
        worker.stop()
    answer: dict = {}

    def ask() -> None:
        answer["resp"] = httpx.post(cluster.base_url + "/v1/completions",
                                    json={"model": MODEL, "prompt": "at zero", "max_tokens": 4}, timeout=180)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    wait_until(lambda: _waiting_at_pool_router(cluster) == 1, 60, "the request held at the pool's router")
    assert "resp" not in answer
    cluster.workers.append(cluster.mocker("--speedup-ratio", "2", "--endpoint", f"dyn://{POOL}.backend.generate"))
    asker.join(150)
    assert answer["resp"].status_code == 200, answer["resp"].text
    assert answer["resp"].json()["usage"]["completion_tokens"] == 4
    assert _waiting_at_pool_router(cluster) == 0

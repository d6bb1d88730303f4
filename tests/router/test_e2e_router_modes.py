"""`--router-mode round-robin` (the default) and `random`, end to end: two mocker workers,
one frontend per mode, each worker's own request counter as the oracle."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, wait_until
from tests.fixtures.procs import metric_value
from tests.router.e2e_helpers import MODEL, complete, metrics, tokens, worker_requests

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("router-modes"), tiny_model, "file")
    try:
        c.workers = [c.mocker("--speedup-ratio", "100") for _ in range(2)]  # type: ignore[attr-defined]
        c.frontend()  # default mode
        c.wait_workers(MODEL, 2)
        yield c
    finally:
        c.stop()


def serving(url: str) -> list[dict]:
    return [i for i in json.loads(http_get(url + "/health")[1]).get("instances", []) if i.get("model") == MODEL]


def served_by(cluster, prompt_seed: int, url: str) -> int:
    """Index of the worker that served one request (its counter moved by exactly one)."""
    before = [worker_requests(w) for w in cluster.workers]
    complete(url, tokens(prompt_seed, 20))
    deltas = [worker_requests(w) - b for w, b in zip(cluster.workers, before)]
    assert sorted(deltas) == [0.0, 1.0], deltas
    return deltas.index(1.0)


def test_default_mode_is_round_robin_and_alternates(cluster):
    # The same prompt every time: round-robin ignores content, so a cache cannot explain the pattern.
    picks = [served_by(cluster, 7, cluster.base_url) for _ in range(8)]
    assert all(a != b for a, b in zip(picks, picks[1:])), picks
    assert picks.count(0) == picks.count(1) == 4


def test_random_mode_uses_both_workers(cluster):
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--router-mode", "random"])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(serving(url)) == 2, 60, "random frontend to see 2 workers")
        picks = [served_by(cluster, 7, url) for _ in range(30)]
        # Both workers are used (all 30 on one worker: probability 2**-29) and no strict alternation
        # (probability 2**-29 as well): random, not round-robin in disguise.
        assert set(picks) == {0, 1}, picks
        assert any(a == b for a, b in zip(picks, picks[1:])), picks
    finally:
        proc.stop()


def test_a_load_blind_mode_times_the_request_but_claims_no_kv_hit_rate(cluster):
    """nvext.extra_fields timing under round-robin: it never looked at caches, so no kv_hit_rate."""
    body = httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": tokens(8, 20), "max_tokens": 2, "nvext": {"extra_fields": ["timing"]}}).json()
    assert body["nvext"]["timing"]["ttft_ms"] > 0 and "kv_hit_rate" not in body["nvext"]["timing"], body


def test_a_load_blind_mode_reports_dynamos_router_series(cluster):
    """As Dynamo 1.6.1's frontend under round-robin: the router series of the component routed to exist
    before a request and count it (its input length by model and phase, TTFT, output length, mean ITL);
    what only KV routing measures (predicted hit rate, decision phases) stays at 0."""
    backend = {"dynamo_namespace": "dynamo", "dynamo_component": "backend"}
    isl = {**backend, "model": MODEL, "phase": "aggregated"}
    names = {"dynamo_component_router_requests_total": backend, "dynamo_component_router_requests_started_total":
             backend, "dynamo_component_router_time_to_first_token_seconds_count": backend,
             "dynamo_component_router_output_sequence_tokens_sum": backend,
             "dynamo_component_router_inter_token_latency_seconds_count": backend,
             "dynamo_component_router_input_sequence_tokens_sum": isl}

    def read() -> dict[str, float | None]:
        text = metrics(cluster.base_url)
        return {name: metric_value(text, name, labels) for name, labels in names.items()}

    before = read()
    assert all(before[n] is not None for n in names if "input_sequence" not in n), before
    body = complete(cluster.base_url, tokens(9, 20), max_tokens=5)
    generated = body["usage"]["completion_tokens"]
    wait_until(lambda: read()["dynamo_component_router_output_sequence_tokens_sum"] ==
               before["dynamo_component_router_output_sequence_tokens_sum"] + generated, 10, "the stream's end counted")
    after = read()
    delta = {n: after[n] - (before[n] or 0.0) for n in names}
    assert delta == {"dynamo_component_router_requests_total": 1.0, "dynamo_component_router_requests_started_total":
                     1.0, "dynamo_component_router_time_to_first_token_seconds_count": 1.0,
                     "dynamo_component_router_output_sequence_tokens_sum": float(generated),
                     "dynamo_component_router_inter_token_latency_seconds_count": 1.0,
                     "dynamo_component_router_input_sequence_tokens_sum": 20.0}, delta
    text = metrics(cluster.base_url)
    assert metric_value(text, "dynamo_component_router_kv_hit_rate_count", backend) == 0.0
    assert metric_value(text, "dynamo_router_overhead_total_ms_count") == 0.0

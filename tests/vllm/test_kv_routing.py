"""KV-aware routing over real engines: two `dynamo.vllm` workers with prefix caching publish
their KV events; a frontend with `--router-mode kv` (the default `ttft` cost) spreads cold
prompts over both and sends each follow-up to the worker that holds its prefix, which vLLM
itself confirms by reporting the prefix as cached."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.fixtures.procs import wait_until
from tests.router.e2e_helpers import cached_tokens, complete, route_info, tokens, worker_requests
from tests.vllm.conftest import BLOCK_SIZE, MODEL, VllmCluster, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.timeout(1500)]

PREFIXES = 4
PREFIX_TOKENS = 10 * BLOCK_SIZE


@pytest.fixture(scope="module")
def cluster(vllm_python, vllm_model, tmp_path_factory):
    c = VllmCluster(tmp_path_factory.mktemp("vllm-kv-routing"), vllm_model, vllm_python)
    try:
        cores = os.cpu_count() or 1  # each engine pins its OpenMP threads: one core each
        c.workers = [c.vllm_worker(env={"VLLM_CPU_OMP_THREADS_BIND": str(i % cores)}, wait=False) for i in range(2)]
        for worker in c.workers:
            wait_healthy(worker, timeout=900)
        c.frontend("--router-mode", "kv")
        c.wait_workers(MODEL, 2, timeout=120)
        yield c
    finally:
        c.stop()


def indexed_blocks(base_url: str) -> int:
    return sum(route_info(base_url).get("indexed_blocks", {}).values())


def test_follow_ups_reach_the_worker_holding_their_prefix(cluster):
    url = cluster.base_url
    assert route_info(url)["mode"] == "kv-events", route_info(url)
    before = [worker_requests(w) for w in cluster.workers]
    prefixes = [tokens(100 + i, PREFIX_TOKENS) for i in range(PREFIXES)]
    for i, prefix in enumerate(prefixes):
        body = complete(url, prefix + tokens(200 + i, 8), max_tokens=2)
        assert cached_tokens(body) == 0  # prompts this module never sent before
        # vLLM's events for this prompt's full blocks reach the router before the follow-ups are sent
        wait_until(lambda i=i: indexed_blocks(url) >= (i + 1) * PREFIX_TOKENS // BLOCK_SIZE, 60,
                   f"prefix {i} indexed")
    served = [worker_requests(w) - b for w, b in zip(cluster.workers, before)]
    assert all(n >= 1 for n in served), f"cold prompts all went to one worker: {served}"
    for i in (1, 0, 3, 2):  # not the cold order: round-robin, continuing its cycle, would miss them all
        body = complete(url, prefixes[i] + tokens(300 + i, 8), max_tokens=2)
        # vLLM reports cached tokens only where the prefix really is: the other worker would say 0
        assert cached_tokens(body) >= PREFIX_TOKENS, (i, body["usage"])


def test_a_cache_salt_keeps_tenants_apart_in_vllm_and_in_the_router(cluster):
    """nvext.cache_salt reaches vLLM as its own `cache_salt` (vLLM then reports a prefix cached only for
    the same salt) and vLLM's KV events carry it back, so the router's index keeps the namespaces apart
    too (the response's kv_hit_rate). The worker is pinned: another tenant's miss is not a placement."""
    url = cluster.base_url
    prompt = tokens(950, PREFIX_TOKENS) + tokens(951, 8)

    def ask(iid=None, salt=None, headers=None) -> dict:
        nvext = {"extra_fields": ["timing", "worker_id"], **({"cache_salt": salt} if salt else {}),
                 **({"backend_instance_id": iid} if iid is not None else {})}
        resp = httpx.post(url + "/v1/completions", timeout=120, headers=headers,
                          json={"model": MODEL, "prompt": prompt, "max_tokens": 2, "nvext": nvext})
        assert resp.status_code == 200, resp.text
        return resp.json()

    indexed = indexed_blocks(url)
    first = ask(salt="tenant-a")
    iid = first["nvext"]["worker_id"]["decode_worker_id"]
    assert cached_tokens(first) == 0 and first["nvext"]["timing"]["kv_hit_rate"] == 0.0
    wait_until(lambda: indexed_blocks(url) >= indexed + PREFIX_TOKENS // BLOCK_SIZE, 60, "the salted prompt indexed")
    again = ask(iid, "tenant-a")
    assert cached_tokens(again) >= PREFIX_TOKENS and again["nvext"]["timing"]["kv_hit_rate"] > 0.9
    for other in (ask(iid), ask(iid, "tenant-b"), ask(iid, "tenant-a", {"x-tenant-id": "tenant-c"})):
        assert cached_tokens(other) == 0 and other["nvext"]["timing"]["kv_hit_rate"] == 0.0, other

"""Approximate mode reports only blocks it still believes cached: /health's `indexed_blocks` and the
`<prefix>_router_indexed_blocks` metric drop blocks whose TTL ran out even when no request has come
since (expiry is otherwise lazy, paid by the next request's lookup)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes
from dynamo.router.approx import ApproxIndexer
from dynamo.router.config import KvMode, KvRouterConfig
from dynamo.router.kv_router import KvRouter
from dynamo.router.metrics import RouterMetrics
from tests.fixtures.procs import metric_value

BS = 4
PROMPT = list(range(32))  # 8 blocks


def test_the_indexers_counts_leave_out_expired_blocks_without_a_lookup():
    now = [1000.0]
    ax = ApproxIndexer(ttl_secs=5, clock=lambda: now[0])
    local = block_hashes(PROMPT, BS)
    ax.record((1, 0), local, sequence_hashes(local))
    ax.record((2, 0), local[:3], sequence_hashes(local)[:3])
    assert ax.tree_sizes() == {(1, 0): 8, (2, 0): 3}
    now[0] += 5.1
    assert sum(ax.tree_sizes().values()) == 0  # no find_matches in between
    assert ax.expired_blocks == 11


def approx_router(now: list[float]) -> KvRouter:
    router = KvRouter(BS, KvRouterConfig(use_kv_events=False, router_ttl_secs=5), clock=lambda: now[0])
    assert router.mode == KvMode.APPROXIMATE
    router.add_worker(1)
    sel = router.select(PROMPT, request_id="a")
    router.add_request("a", sel, PROMPT)
    router.free("a")
    return router


def test_health_stops_reporting_blocks_past_their_ttl():
    now = [0.0]
    router = approx_router(now)
    assert router.stats()["tree_sizes"] == {"1:0": 8}
    now[0] = 5.1
    assert sum(router.stats()["tree_sizes"].values()) == 0


def test_the_indexed_blocks_metric_stops_counting_them_too():
    now = [0.0]
    router = approx_router(now)
    registry = CollectorRegistry()
    RouterMetrics.attach(registry, "dynamo_frontend", lambda: [("tiny", router, router.mode, 0, "decode")])

    def indexed() -> float:
        text = generate_latest(registry).decode()
        return metric_value(text, "dynamo_frontend_router_indexed_blocks", {"model": "tiny", "worker_id": "1"}) or 0.0

    assert indexed() == 8.0
    now[0] = 5.1
    assert indexed() == 0.0

"""The KV router's own metrics (router/metrics.py): a booked KV selection is observed in the decision
and overlap histograms and in Dynamo's router series with its predicted hit rate and decision phases;
a prefill pool's selection also counts the cached blocks it passed by on a better-cached worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dynamo.router.kv_router import KvRouter
from dynamo.router.metrics import RouterMetrics
from dynamo.router.policy import Role
from dynamo.runtime.records import EndpointId
from tests.fixtures.procs import metric_value
from tests.router.test_kv_router import make, store_prompt
from tests.router.test_policy import pool, req

EID = EndpointId("ns", "backend", "generate")
LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "router_id": "42", "worker_id": "2a"}


def test_a_kv_selection_lands_in_dynamos_router_series():
    registry = CollectorRegistry()
    metrics = RouterMetrics.attach(registry, "dynamo_frontend", lambda: [], router_id=42)
    router = KvRouter(4)
    router.add_worker(1)
    request = req("a", list(range(16)))
    selection = router.select(request.token_ids, request_id="a")
    metrics.booked(pool(1), EID, request, selection, selection.overhead.total)
    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_frontend_router_decision_seconds_count", {"model": "m"}) == 1.0
    assert metric_value(text, "dynamo_component_router_requests_total", LABELS) == 1.0
    assert metric_value(text, "dynamo_component_router_kv_hit_rate_count", LABELS) == 1.0
    assert metric_value(text, "dynamo_component_router_input_sequence_tokens_sum",
                        {**LABELS, "model": "m", "phase": "aggregated"}) == 16.0
    assert metric_value(text, "dynamo_router_overhead_total_ms_count", {"router_id": "42"}) == 1.0
    assert metric_value(text, "dynamo_component_router_overlap_blocks_lost_count", LABELS) is None  # not prefill


def test_a_prefill_selection_counts_what_it_passed_by():
    """Worker 1 caches the prompt's 4 blocks but is loaded with 40 others: the cost sends the prompt to
    idle worker 2, passing 4 cached blocks by."""
    registry = CollectorRegistry()
    metrics = RouterMetrics.attach(registry, "dynamo_frontend", lambda: [], router_id=42)
    router = make()
    router.add_worker(1)
    router.add_worker(2)
    request = req("a", list(range(16)))
    assert store_prompt(router, 1, request.token_ids) == "ok"
    busy = list(range(1000, 1160))
    router.add_request("busy", router.select(busy, request_id="busy", allowed=[1]), busy)
    selection = router.select(request.token_ids, request_id="a")
    assert (selection.worker_id, selection.overlap_blocks, selection.best_overlap_blocks) == (2, 0, 4)
    metrics.booked(pool(2, role=Role.PREFILL), EID, request, selection, 0.0)
    prefill = {**LABELS, "worker_type": "prefill"}
    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_component_router_non_max_overlap_selections_total", prefill) == 1.0
    assert metric_value(text, "dynamo_component_router_overlap_blocks_lost_sum", prefill) == 4.0
    assert metric_value(text, "dynamo_component_router_input_sequence_tokens_count",
                        {**LABELS, "model": "m", "phase": "prefill"}) == 1.0

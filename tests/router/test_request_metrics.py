"""Dynamo's router series (router/request_metrics.py), under the names, labels and values NVIDIA Dynamo
1.6.1's frontend shows in every router mode: a worker endpoint's series exist at 0 once it is known, a
routed request counts (requests, requests started, its input length by model and phase), its TTFT is
observed once at its first token, its output length and mean inter-token latency when its stream ends;
a request that ends first leaves nothing behind; each KV decision's phases land in the overhead
histograms. The load-blind and load-based policies emit them as the kv policy does, but leave what only
KV routing measures (hit rate, decision phases) at 0, as Dynamo's round-robin and random modes do."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.policy import PolicyHost, Role, create_policy
from dynamo.router.config import KvRouterConfig
from dynamo.router.request_metrics import RouterRequestMetrics
from dynamo.router.selection import RoutingOverhead
from dynamo.runtime.records import EndpointId
from tests.fixtures.procs import metric_value
from tests.router.test_policy import pool, req

EID = EndpointId("ns", "backend", "generate")
LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "router_id": "42", "worker_id": "2a"}
C = "dynamo_component_router"


def scrape(registry: CollectorRegistry, name: str, **extra: str) -> float | None:
    return metric_value(generate_latest(registry).decode(), name, {**LABELS, **extra})


def test_routed_requests_hit_rates_and_first_tokens():
    registry = CollectorRegistry()
    metrics = RouterRequestMetrics(registry, router_id=42)
    metrics.endpoint_series(EID)
    assert scrape(registry, f"{C}_requests_total") == 0.0  # before any request
    assert scrape(registry, f"{C}_kv_hit_rate_count") == 0.0
    assert scrape(registry, f"{C}_input_sequence_tokens_count") is None  # born labelled by model and phase
    metrics.routed("a", EID, "m", "aggregated", 64, cached=(3, 4))  # 3 of 4 blocks cached
    metrics.routed("b", EID, "m", "aggregated", 10, cached=(0, 1))
    metrics.first_token("a")
    metrics.first_token("a")  # once only
    metrics.finished("b", 0)  # ended before its first token
    metrics.first_token("b")
    assert scrape(registry, f"{C}_requests_total") == 2.0
    assert scrape(registry, f"{C}_requests_started_total") == 2.0
    assert scrape(registry, f"{C}_kv_hit_rate_sum") == 0.75
    assert scrape(registry, f"{C}_input_sequence_tokens_sum", model="m", phase="aggregated") == 74.0
    assert scrape(registry, f"{C}_time_to_first_token_seconds_count") == 1.0
    assert list(metrics._streams) == ["a"]
    metrics.finished("a", 5)
    metrics.finished("a", 5)  # a request ends once
    assert metrics._streams == {}
    assert scrape(registry, f"{C}_output_sequence_tokens_sum") == 5.0
    assert scrape(registry, f"{C}_output_sequence_tokens_count") == 1.0
    assert scrape(registry, f"{C}_inter_token_latency_seconds_count") == 1.0


def test_output_length_and_itl_need_a_first_token_and_a_count():
    registry = CollectorRegistry()
    metrics = RouterRequestMetrics(registry, router_id=42)
    metrics.endpoint_series(EID)
    for rid, first, tokens in (("never-started", False, 3), ("uncounted", True, 0), ("one-token", True, 1)):
        metrics.routed(rid, EID, "m", "aggregated", 10)
        if first:
            metrics.first_token(rid)
        metrics.finished(rid, tokens)
    # Only the one-token stream has a length, and no gap between tokens to average.
    assert scrape(registry, f"{C}_output_sequence_tokens_count") == 1.0
    assert scrape(registry, f"{C}_inter_token_latency_seconds_count") == 0.0


def test_each_decision_lands_in_the_overhead_histograms_in_milliseconds():
    registry = CollectorRegistry()
    metrics = RouterRequestMetrics(registry, router_id=42)
    overhead = RoutingOverhead(0.001, 0.002, 0.003, 0.004, 0.010)
    metrics.routed("a", EID, "m", "aggregated", 10, cached=(0, 1), overhead=overhead)
    text = generate_latest(registry).decode()
    for name, ms in (("block_hashing", 1.0), ("seq_hashing", 2.0), ("indexer_find_matches", 3.0),
                     ("scheduling", 4.0), ("total", 10.0), ("shared_cache_query", 0.0)):
        assert metric_value(text, f"dynamo_router_overhead_{name}_ms_sum", {"router_id": "42"}) == ms
        assert metric_value(text, f"dynamo_router_overhead_{name}_ms_count", {"router_id": "42"}) == \
            (0.0 if name == "shared_cache_query" else 1.0)  # no shared KV cache here


def test_a_prefill_selection_counts_the_overlap_it_passed_by():
    registry = CollectorRegistry()
    metrics = RouterRequestMetrics(registry, router_id=42)
    metrics.endpoint_series(EID)
    assert scrape(registry, f"{C}_non_max_overlap_selections_total", worker_type="prefill") == 0.0
    metrics.routed("a", EID, "m", "prefill", 64, cached=(4, 16), blocks_lost=0)
    metrics.routed("b", EID, "m", "prefill", 64, cached=(1, 16), blocks_lost=3)
    assert scrape(registry, f"{C}_non_max_overlap_selections_total", worker_type="prefill") == 1.0
    assert scrape(registry, f"{C}_overlap_blocks_lost_sum", worker_type="prefill") == 3.0
    assert scrape(registry, f"{C}_overlap_blocks_lost_count", worker_type="prefill") == 2.0


# What Dynamo 1.6.1's frontend shows in --router-mode round-robin / random, one mocker, before any request:
# every one of these at 0 (the input-length histogram is born with its first request).
AT_ZERO = [f"{C}_requests_total", f"{C}_requests_started_total", f"{C}_kv_hit_rate_count",
           f"{C}_time_to_first_token_seconds_count", f"{C}_inter_token_latency_seconds_count",
           f"{C}_output_sequence_tokens_count", f"{C}_kv_transfer_estimated_latency_seconds_count",
           f"{C}_shared_cache_hit_rate_count", f"{C}_shared_cache_beyond_blocks_count"]
PER_ROUTER = [f"dynamo_router_overhead_{n}_ms_count" for n in
              ("block_hashing", "seq_hashing", "indexer_find_matches", "scheduling", "total", "shared_cache_query")]


@pytest.mark.parametrize("mode", ["round-robin", "random", "least-loaded", "power-of-two"])
async def test_load_blind_and_load_based_policies_emit_dynamos_router_series(mode):
    registry = CollectorRegistry()
    policy = create_policy(mode, KvRouterConfig())
    await policy.attach(PolicyHost(None, None, 42, registry))
    p = pool(1, 2)
    policy.on_membership_change(p)
    for name in AT_ZERO:
        assert scrape(registry, name) == 0.0, name
    for name in PER_ROUTER + ["dynamo_router_shared_cache_errors_total"]:
        assert metric_value(generate_latest(registry).decode(), name, {"router_id": "42"}) == 0.0, name
    for stat in ("non_max_overlap_selections_total", "overlap_blocks_lost_count"):
        assert scrape(registry, f"{C}_{stat}", worker_type="prefill") == 0.0
    await policy.query(p, req("peek", list(range(23))), set())  # names a worker, routes nothing
    assert scrape(registry, f"{C}_requests_total") == 0.0
    for i in range(3):  # 23-token prompts answered with 5 tokens, as the anchor's were
        await policy.select(p, req(f"r{i}", list(range(23))), set())
        policy.prefill_complete(f"r{i}")
        policy.free(f"r{i}", 5)
    for name, value in ((f"{C}_requests_total", 3), (f"{C}_requests_started_total", 3),
                        (f"{C}_time_to_first_token_seconds_count", 3), (f"{C}_inter_token_latency_seconds_count", 3),
                        (f"{C}_output_sequence_tokens_sum", 15), (f"{C}_output_sequence_tokens_count", 3),
                        (f"{C}_kv_hit_rate_count", 0)):
        assert scrape(registry, name) == value, name
    assert scrape(registry, f"{C}_input_sequence_tokens_sum", model="m", phase="aggregated") == 69.0
    assert scrape(registry, f"{C}_input_sequence_tokens_count", model="m", phase="aggregated") == 3.0
    for name in PER_ROUTER:  # no KV decision was made
        assert metric_value(generate_latest(registry).decode(), name, {"router_id": "42"}) == 0.0, name


async def test_each_phase_of_a_disaggregated_request_is_labelled():
    registry = CollectorRegistry()
    policy = create_policy("round-robin", KvRouterConfig())
    await policy.attach(PolicyHost(None, None, 42, registry))
    await policy.select(pool(3, role=Role.PREFILL), req("p", list(range(8))), set())
    decode = PreprocessedRequest(request_id="d", model="m", token_ids=list(range(8)),
                                 disaggregated_params={"transfer": 1})
    await policy.select(pool(1), decode, set())
    for phase in ("prefill", "decode"):
        assert scrape(registry, f"{C}_input_sequence_tokens_count", model="m", phase=phase) == 1.0


async def test_a_policy_never_attached_routes_without_metrics():
    policy = create_policy("round-robin", KvRouterConfig())
    choice = await policy.select(pool(1), req("a", [1, 2, 3]), set())
    policy.prefill_complete("a")
    policy.free("a", 3)
    assert choice.worker.instance_id == 1

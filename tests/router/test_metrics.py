"""The KV router's request metrics under Dynamo's names (router/metrics.py): series exist at 0 once a
worker's endpoint is known, a routed request counts with its predicted hit rate, its TTFT is observed
once at its first token, its output length and mean inter-token latency when its stream ends, a request
that ends first leaves nothing behind, and each decision's phases land in the overhead histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dynamo.router.metrics import RouterMetrics
from dynamo.router.selection import RoutingOverhead
from dynamo.runtime.records import EndpointId
from tests.fixtures.procs import metric_value

EID = EndpointId("ns", "backend", "generate")
LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "dynamo_endpoint": "generate", "router_id": "42"}


def scrape(registry: CollectorRegistry, name: str) -> float | None:
    return metric_value(generate_latest(registry).decode(), name, LABELS)


def test_routed_requests_hit_rates_and_first_tokens():
    registry = CollectorRegistry()
    metrics = RouterMetrics.attach(registry, "dynamo_frontend", lambda: [], router_id=42)
    metrics.endpoint_series(EID)
    assert scrape(registry, "dynamo_component_router_requests_total") == 0.0  # before any request
    assert scrape(registry, "dynamo_component_router_kv_hit_rate_count") == 0.0
    metrics.routed("a", EID, overlap_blocks=3, prompt_blocks=4, prompt_tokens=64)  # 3 of 4 blocks cached
    metrics.routed("b", EID, overlap_blocks=0, prompt_blocks=1, prompt_tokens=10)
    metrics.first_token("a")
    metrics.first_token("a")  # once only
    metrics.finished("b", 0)  # ended before its first token
    metrics.first_token("b")
    assert scrape(registry, "dynamo_component_router_requests_total") == 2.0
    assert scrape(registry, "dynamo_component_router_kv_hit_rate_sum") == 0.75
    assert scrape(registry, "dynamo_component_router_input_sequence_tokens_sum") == 74.0
    assert scrape(registry, "dynamo_component_router_time_to_first_token_seconds_count") == 1.0
    assert list(metrics._streams) == ["a"]
    metrics.finished("a", 5)
    metrics.finished("a", 5)  # a request ends once
    assert metrics._streams == {}
    assert scrape(registry, "dynamo_component_router_output_sequence_tokens_sum") == 5.0
    assert scrape(registry, "dynamo_component_router_output_sequence_tokens_count") == 1.0
    assert scrape(registry, "dynamo_component_router_inter_token_latency_seconds_count") == 1.0


def test_output_length_and_itl_need_a_first_token_and_a_count():
    registry = CollectorRegistry()
    metrics = RouterMetrics.attach(registry, "dynamo_frontend", lambda: [], router_id=42)
    metrics.endpoint_series(EID)
    for rid, first, tokens in (("never-started", False, 3), ("uncounted", True, 0), ("one-token", True, 1)):
        metrics.routed(rid, EID, overlap_blocks=0, prompt_blocks=1, prompt_tokens=10)
        if first:
            metrics.first_token(rid)
        metrics.finished(rid, tokens)
    # Only the one-token stream has a length, and no gap between tokens to average.
    assert scrape(registry, "dynamo_component_router_output_sequence_tokens_count") == 1.0
    assert scrape(registry, "dynamo_component_router_inter_token_latency_seconds_count") == 0.0


def test_each_decision_lands_in_the_overhead_histograms_in_milliseconds():
    registry = CollectorRegistry()
    metrics = RouterMetrics.attach(registry, "dynamo_frontend", lambda: [], router_id=42)
    overhead = RoutingOverhead(0.001, 0.002, 0.003, 0.004, 0.010)
    metrics.routed("a", EID, overlap_blocks=0, prompt_blocks=1, prompt_tokens=10, overhead=overhead)
    text = generate_latest(registry).decode()
    for name, ms in (("block_hashing", 1.0), ("seq_hashing", 2.0), ("indexer_find_matches", 3.0),
                     ("scheduling", 4.0), ("total", 10.0)):
        assert metric_value(text, f"dynamo_router_overhead_{name}_ms_sum", {"router_id": "42"}) == ms
        assert metric_value(text, f"dynamo_router_overhead_{name}_ms_count", {"router_id": "42"}) == 1.0

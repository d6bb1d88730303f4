"""The KV router's request metrics under Dynamo's names (router/metrics.py): series exist at 0 once a
worker's endpoint is known, a routed request counts with its predicted hit rate, its TTFT is observed
once at its first token, and a request that ends first leaves nothing behind."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dynamo.router.metrics import RouterMetrics
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
    metrics.forget("b")  # ended before its first token
    metrics.first_token("b")
    assert scrape(registry, "dynamo_component_router_requests_total") == 2.0
    assert scrape(registry, "dynamo_component_router_kv_hit_rate_sum") == 0.75
    assert scrape(registry, "dynamo_component_router_input_sequence_tokens_sum") == 74.0
    assert scrape(registry, "dynamo_component_router_time_to_first_token_seconds_count") == 1.0
    assert metrics._awaiting_first_token == {}

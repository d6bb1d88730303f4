"""`KvCacheGauges`: NVIDIA Dynamo's KV-cache gauges, with its names and label sets (`LLMBackendMetrics`
in Dynamo's common/utils/prometheus.py), read from an engine's load metrics at each scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.worker.harness import KvCacheGauges
from tests.fixtures.procs import metric_value

PER_RANK = {"model": "Qwen/Qwen3-0.6B", "dynamo_component": "backend", "dp_rank": "2"}


def test_gauges_follow_the_engine_load_with_dynamos_names_and_labels():
    load = LoadMetrics(worker_id=1, dp_rank=2, kv_active_blocks=0, kv_total_blocks=1000)
    registry = CollectorRegistry()
    registry.register(KvCacheGauges(lambda: load, "Qwen/Qwen3-0.6B", "backend", 12.5))

    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_component_total_blocks", PER_RANK) == 1000
    assert metric_value(text, "dynamo_component_gpu_cache_usage_percent", PER_RANK) == 0.0
    assert metric_value(text, "dynamo_component_kv_cache_hit_rate", PER_RANK) == 0.0
    assert metric_value(text, "dynamo_component_model_load_time_seconds",
                        {"model": "Qwen/Qwen3-0.6B", "dynamo_component": "backend"}) == 12.5
    assert 'dynamo_component_model_load_time_seconds{dynamo_component="backend",model="Qwen/Qwen3-0.6B"}' in text

    load = LoadMetrics(worker_id=1, dp_rank=2, kv_active_blocks=250, kv_total_blocks=1000,
                       gpu_cache_usage_perc=0.25, gpu_prefix_cache_hit_rate=0.5)
    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_component_gpu_cache_usage_percent", PER_RANK) == 0.25
    assert metric_value(text, "dynamo_component_kv_cache_hit_rate", PER_RANK) == 0.5

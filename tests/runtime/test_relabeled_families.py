"""`RelabeledFamilies`: an engine's own Prometheus series re-served on the system server's registry,
filtered by name prefix and labelled as NVIDIA Dynamo labels them (a sample's own label wins)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dynamo.runtime.system_server import RelabeledFamilies
from tests.fixtures.procs import metric_value

LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "dynamo_endpoint": "generate",
          "worker_id": "1f", "model": "tiny", "model_name": "tiny"}


def engine_registry() -> CollectorRegistry:
    engine = CollectorRegistry()
    Gauge("vllm:num_requests_running", "running", ["model_name", "engine"], registry=engine) \
        .labels("engine-own-name", "0").set(3)
    Counter("vllm:prompt_tokens", "prompt tokens", registry=engine).inc(7)
    Histogram("lmcache:lookup_seconds", "lookup", buckets=(0.1, 1.0), registry=engine).observe(0.5)
    Gauge("python_gc_objects", "not the engine's", registry=engine).set(1)
    return engine


def served(source) -> str:
    worker = CollectorRegistry()
    Gauge("dynamo_component_uptime_seconds", "ours", registry=worker).set(1)
    worker.register(RelabeledFamilies(source, ("vllm:", "lmcache:"), LABELS))
    return generate_latest(worker).decode()


def test_prefixed_families_gain_the_worker_labels_and_keep_their_own():
    engine = engine_registry()
    text = served(lambda: engine)
    running = [line for line in text.splitlines() if line.startswith("vllm:num_requests_running{")]
    assert len(running) == 1
    assert 'model_name="engine-own-name"' in running[0] and 'engine="0"' in running[0]  # the engine's label wins
    assert metric_value(text, "vllm:num_requests_running", {**LABELS, "model_name": "engine-own-name"}) == 3
    assert metric_value(text, "vllm:prompt_tokens_total", LABELS) == 7
    assert metric_value(text, "lmcache:lookup_seconds_bucket", {**LABELS, "le": "1.0"}) == 1
    assert "# TYPE vllm:prompt_tokens_total counter" in text and "# TYPE lmcache:lookup_seconds histogram" in text
    assert "python_gc_objects" not in text
    assert metric_value(text, "dynamo_component_uptime_seconds") == 1


def test_values_are_read_at_each_scrape():
    engine = CollectorRegistry()
    gauge = Gauge("vllm:kv_cache_usage_perc", "usage", registry=engine)
    worker = CollectorRegistry()
    worker.register(RelabeledFamilies(lambda: engine, ("vllm:",), LABELS))
    gauge.set(0.25)
    assert metric_value(generate_latest(worker).decode(), "vllm:kv_cache_usage_perc", LABELS) == 0.25
    gauge.set(0.5)
    assert metric_value(generate_latest(worker).decode(), "vllm:kv_cache_usage_perc", LABELS) == 0.5


def test_a_broken_engine_registry_leaves_the_rest_of_metrics_served():
    def broken():
        raise RuntimeError("multiprocess directory gone")

    text = served(broken)
    assert metric_value(text, "dynamo_component_uptime_seconds") == 1
    assert "vllm:" not in text

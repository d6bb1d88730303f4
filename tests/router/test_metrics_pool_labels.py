"""How the KV router's metrics (router/metrics.py, fed by router/kv_policy.py) name a model's pools: by the
model, with the pool's role as `worker_type`, as Dynamo's router series name the same bookings (`model` with a
`phase`). A model's decode and prefill pools are two series of each family, never a `<model>/prefill` model,
and never two samples with one label set."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.metrics import RouterMetrics
from dynamo.router.policy import Role, WorkerInfo, WorkerPool
from dynamo.runtime.records import EndpointId

DECODE, PREFILL = EndpointId("ns", "backend", "generate"), EndpointId("ns", "prefill", "generate")
KV_FAMILIES = ("router_decision_seconds", "router_overlap_blocks", "router_mode", "router_kv_hit_rate",
               "router_requests", "router_indexed_blocks", "router_queue_pending_requests",
               "worker_active_decode_blocks", "worker_active_prefill_tokens")


def scrape_after_a_disaggregated_booking() -> str:
    """The frontend's policy for model llama, its prefill on worker 2 and its decode on worker 1, booked."""
    policy = KvPolicy(KvRouterConfig(use_kv_events=False))
    registry = CollectorRegistry()
    policy.metrics = RouterMetrics.attach(registry, "dynamo_frontend", policy._rows)
    decode = WorkerPool("llama", Role.DECODE, 1, 4, (WorkerInfo(1, DECODE, None, "a1"),))
    prefill = WorkerPool("llama", Role.PREFILL, 1, 4, (WorkerInfo(2, PREFILL, None, "a2"),))

    async def book() -> None:
        prompt = list(range(16))
        await policy.select(prefill, PreprocessedRequest(request_id="r:prefill", model="llama", token_ids=prompt), set())
        await policy.select(decode, PreprocessedRequest(request_id="r", model="llama", token_ids=prompt), set())

    asyncio.run(book())
    return generate_latest(registry).decode()


def kv_samples(text: str):
    for family in text_string_to_metric_families(text):
        if family.name in {f"dynamo_frontend_{name}" for name in KV_FAMILIES}:  # not Dynamo's router series
            yield from family.samples


def test_a_prefill_pool_is_its_model_with_worker_type_prefill():
    samples = list(kv_samples(scrape_after_a_disaggregated_booking()))
    assert {s.labels["model"] for s in samples} == {"llama"}
    missing = {s.name for s in samples if s.labels.get("worker_type") not in ("decode", "prefill")}
    assert not missing, missing
    for name in ("dynamo_frontend_router_decision_seconds_count", "dynamo_frontend_router_mode",
                 "dynamo_frontend_worker_active_prefill_tokens", "dynamo_frontend_router_requests_total"):
        assert {s.labels["worker_type"] for s in samples if s.name == name} == {"decode", "prefill"}, name


def test_the_two_pools_of_a_model_never_share_a_label_set():
    seen: set = set()
    for s in kv_samples(scrape_after_a_disaggregated_booking()):
        key = (s.name, tuple(sorted(s.labels.items())))
        assert key not in seen, key
        seen.add(key)


def test_a_models_prefill_load_sums_under_its_name():
    text = scrape_after_a_disaggregated_booking()
    prefill_tokens = [s for s in kv_samples(text)
                      if s.name == "dynamo_frontend_worker_active_prefill_tokens" and s.labels["model"] == "llama"]
    assert {s.labels["worker_id"] for s in prefill_tokens} == {"1", "2"}

"""The KV namespace a request's prompt hashes in (router/kv_policy.py): its pool's LoRA adapter (the frontend's
adapter pools), else the request's own `lora_name`. The router service's one pool holds the base model and its
adapters, so an adapter request there must neither match nor leave base-model blocks, and `generate`
(select) must answer as `best_worker_id` (the router's select with the query's lora_name) does."""

from __future__ import annotations

import asyncio

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import Role, WorkerInfo, WorkerPool
from dynamo.runtime.records import EndpointId

EID = EndpointId("ns", "backend", "generate")
BS = 4
PROMPT = list(range(64))  # 16 blocks
# Two classes by uncached length with their own thresholds: `select` looks the prompt up before it books.
CLASSES = """default_policy_family: standard
uncached_isl_buckets:
  - {min_tokens: 0, bucket: short}
  - {min_tokens: 1000, bucket: long}
policy_classes:
  - {name: s, policy_family: standard, cache_bucket: short, queue_policy: fcfs, quantum: 1,
     prefill_busy_threshold: 100000}
  - {name: l, policy_family: standard, cache_bucket: long, queue_policy: fcfs, quantum: 1,
     prefill_busy_threshold: 200000}
"""


def service_pool(lora_name: str | None = None) -> WorkerPool:
    """The router service's pool (named by its endpoint, no adapter), or a frontend adapter pool."""
    return WorkerPool(EID.path, Role.DECODE, 1, BS, tuple(WorkerInfo(i, EID, None, f"a{i}") for i in (1, 2)),
                      lora_name=lora_name)


def request(rid: str, lora_name: str | None = None) -> PreprocessedRequest:
    return PreprocessedRequest(request_id=rid, model=lora_name or "base", token_ids=PROMPT, lora_name=lora_name)


def policy(config: str | None = None, tmp_path=None) -> KvPolicy:  # approximate: it remembers its own bookings
    if config is None:
        return KvPolicy(KvRouterConfig(use_kv_events=False))
    path = tmp_path / "policy.yaml"
    path.write_text(config)
    return KvPolicy(KvRouterConfig(use_kv_events=False, router_policy_config=str(path)))


def booked_then(pol: KvPolicy, first: PreprocessedRequest, then: PreprocessedRequest, pool: WorkerPool):
    """`first` booked (and freed: its blocks stay predicted cached), then what `then` finds."""
    async def run():
        chosen = await pol.select(pool, first, set())
        pol.free(first.request_id)
        return chosen, await pol.query(pool, then, set()), pol.cached_tokens(pool, then, set())
    return asyncio.run(run())


def test_an_adapter_request_finds_no_base_model_prefix():
    _, found, cached = booked_then(policy(), request("base"), request("lora", "adapterA"), service_pool())
    assert (found.overlap_blocks, cached) == (0, 0)


def test_a_base_request_finds_no_adapter_prefix():
    _, found, cached = booked_then(policy(), request("lora", "adapterA"), request("base"), service_pool())
    assert (found.overlap_blocks, cached) == (0, 0)


def test_an_adapter_request_finds_its_own_adapters_prefix_where_it_was_booked():
    chosen, found, cached = booked_then(policy(), request("a1", "adapterA"), request("a2", "adapterA"), service_pool())
    assert (found.worker.instance_id, found.overlap_blocks, cached) == (chosen.worker.instance_id, 16, 64)
    _, other, _ = booked_then(policy(), request("a1", "adapterA"), request("b1", "adapterB"), service_pool())
    assert other.overlap_blocks == 0  # another adapter's namespace


def test_select_and_best_worker_id_agree_on_an_adapter_request():
    pol = policy()
    pool = service_pool()
    asyncio.run(pol.select(pool, request("base"), set()))
    pol.free("base")
    sel = pol.routes[pool.name].router.select(PROMPT, lora_name="adapterA")  # what best_worker_id asks
    chosen = asyncio.run(pol.select(pool, request("lora", "adapterA"), set()))
    assert chosen.overlap_blocks == sel.overlap_blocks == 0


def test_the_lookup_before_booking_hashes_in_the_adapters_namespace(tmp_path):
    pol = policy(CLASSES, tmp_path)
    pool = service_pool()

    async def run():
        await pol.select(pool, request("base"), set())
        pol.free("base")
        return await pol.select(pool, request("lora", "adapterA"), set())  # booked on the lookup it was classified by

    adapter = asyncio.run(run())
    assert pol.routes[pool.name].queue.profile.thresholds_vary
    assert adapter.overlap_blocks == 0


def test_a_frontend_adapter_pool_keeps_its_adapters_namespace():
    _, found, _ = booked_then(policy(), request("a1", "adapterA"), request("a2"), service_pool("adapterA"))
    assert found.overlap_blocks == 16  # the frontend's requests for an adapter need not name it again

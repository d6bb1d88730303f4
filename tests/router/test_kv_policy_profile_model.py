"""`KvPolicy.use_profile_of` (router/kv_policy.py): a pool not named by its model (the router service's is its
endpoint path) routes with the `--router-policy-config` profile and busy thresholds of the model its host
names, from when the host names it; requests already waiting in its queue are still served."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import Role, WorkerInfo, WorkerPool
from dynamo.router.selector import BusyThresholds
from dynamo.runtime.records import EndpointId
from tests.router.test_router_queue import distinct, req

EID = EndpointId("ns", "backend", "generate")
LLAMA = """models:
  llama:
    default_policy_family: standard
    uncached_isl_buckets:
      - {min_tokens: 0, bucket: all}
    policy_classes:
      - {name: llama-main, policy_family: standard, cache_bucket: all, queue_policy: wspt, quantum: 1,
         prefill_busy_threshold: 10}
"""


@pytest.fixture
def policy(tmp_path) -> KvPolicy:
    path = tmp_path / "policy.yaml"
    path.write_text(LLAMA)
    config = KvRouterConfig(router_policy_config=str(path), router_cost_model="dynamo", use_kv_events=False,
                            active_prefill_tokens_threshold=10, router_queue_timeout_secs=5.0)
    config.validate()
    return KvPolicy(config)


def endpoint_pool(version: int = 1) -> WorkerPool:
    return WorkerPool(EID.path, Role.DECODE, version, 4, (WorkerInfo(1, EID, None, "a1"),))


def test_a_pool_named_otherwise_takes_the_profile_of_the_model_it_serves(policy):
    pool = endpoint_pool()
    policy.on_membership_change(pool)
    assert policy.routes[EID.path].queue.profile.source == "flags"
    policy.use_profile_of(pool, "llama")
    route = policy.routes[EID.path]
    assert (route.queue.profile.source, route.queue.policy, route.router.thresholds.active_prefill_tokens) == \
        ("models.llama", "wspt", 10)
    policy.use_profile_of(pool, None)  # its own model's again: there is none of that name
    assert policy.routes[EID.path].queue.profile.source == "flags"


def test_a_model_named_before_its_route_is_made_is_in_force_from_the_start(policy):
    pool = endpoint_pool()
    policy.use_profile_of(pool, "llama")
    policy.on_membership_change(pool)
    assert policy.routes[EID.path].queue.profile.source == "models.llama"


def test_the_models_busy_thresholds_reach_its_pool(policy):
    pool = endpoint_pool()
    policy.use_profile_of(pool, "llama")
    policy.on_membership_change(pool)
    policy.set_busy_thresholds("llama", BusyThresholds(active_decode_blocks=0.5))
    assert policy.routes[EID.path].router.busy_thresholds.active_decode_blocks == 0.5


async def test_a_request_waiting_when_the_profile_changes_is_still_served(policy):
    pool = endpoint_pool()
    await policy.select(pool, req("big", distinct(32, 500)), set())  # 32 tokens await prefill: over 10, busy
    waiting = asyncio.ensure_future(policy.select(pool, req("waiter", distinct(8, 100)), set()))
    await asyncio.sleep(0.05)
    assert not waiting.done() and policy.routes[EID.path].queue.pending == 1
    policy.use_profile_of(pool, "llama")  # the host learns its model meanwhile
    assert policy.routes[EID.path].queue.pending == 0  # a new queue for newcomers
    await asyncio.sleep(0.01)
    assert policy.routes[EID.path].queue.pending == 1  # it moved into the new queue
    policy.prefill_complete("big")
    for _ in range(20):  # a few turns of the loop: woken by the release, not by the old queue's 0.1 s recheck
        await asyncio.sleep(0)
    assert waiting.done() and waiting.result().worker.instance_id == 1

"""Busy thresholds changed at runtime (what the frontend's `POST /busy_threshold` drives): a change
names only the thresholds it sets, reaches every pool of its model (and pools created later, and no
other model's), and a request waiting in the router queue is served at once when the change frees
its worker. Load-blind policies detect no busy workers and say so (None)."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import RoundRobinPolicy, Role, WorkerPool
from dynamo.router.selector import BusyThresholds
from dynamo.router.session_affinity import with_session_affinity
from tests.router.test_policy import pool
from tests.router.test_router_queue import distinct, req


def test_an_update_changes_only_what_it_sets():
    start = BusyThresholds(0.9, 5000, None)
    assert start.updated(BusyThresholds(active_prefill_tokens_frac=0.5)) == BusyThresholds(0.9, 5000, 0.5)
    assert start.updated(BusyThresholds(0.5)) == BusyThresholds(0.5, 5000, None)
    assert start.updated(BusyThresholds()) == start


@pytest.mark.parametrize("thresholds, field", [
    (BusyThresholds(1.5), "active_decode_blocks_threshold"),
    (BusyThresholds(-0.1), "active_decode_blocks_threshold"),
    (BusyThresholds(active_prefill_tokens=-1), "active_prefill_tokens_threshold"),
    (BusyThresholds(active_prefill_tokens_frac=float("inf")), "active_prefill_tokens_threshold_frac"),
    (BusyThresholds(active_prefill_tokens_frac=-2.0), "active_prefill_tokens_threshold_frac"),
    (BusyThresholds(0.0, 0, 0.0), None),
    (BusyThresholds(1.0, 10**9, 3.0), None),
])
def test_values_no_load_can_be_measured_against_are_named(thresholds, field):
    problem = thresholds.problem()
    assert (problem[0] if problem else None) == field


async def test_a_change_reaches_every_pool_of_the_model_and_no_other():
    policy = KvPolicy(KvRouterConfig(active_decode_blocks_threshold=0.8, router_queue_threshold=0.5))
    await policy.select(pool(1), req("a", [1, 2, 3, 4]), set())
    other = WorkerPool("other", Role.DECODE, 1, 4, pool(7).workers)
    await policy.select(other, req("b", [1, 2, 3, 4], model="other"), set())
    assert policy.busy_thresholds("m") == BusyThresholds(0.8, None, None)
    now = policy.set_busy_thresholds("m", BusyThresholds(active_prefill_tokens=100, active_prefill_tokens_frac=0.9))
    assert now == BusyThresholds(0.8, 100, 0.9) == policy.busy_thresholds("m")
    router = policy.routes["m"].router
    assert router.busy_thresholds == now
    assert router.thresholds.active_prefill_tokens_frac == 0.5  # --router-queue-threshold is stricter: it stays
    assert policy.routes["other"].router.busy_thresholds == BusyThresholds(0.8, None, None)
    policy.on_membership_change(pool(3, role=Role.PREFILL))  # the model's prefill pool appears later
    assert policy.routes["m/prefill"].router.busy_thresholds == now


async def test_a_request_queued_for_a_busy_worker_is_served_when_the_threshold_rises():
    policy = KvPolicy(KvRouterConfig(router_cost_model="dynamo", active_prefill_tokens_threshold=10,
                                     router_queue_timeout_secs=30.0))
    p = pool(1)
    await policy.select(p, req("first", distinct(40, 0)), set())  # 40 tokens to prefill: over 10, busy
    waiting = asyncio.ensure_future(policy.select(p, req("second", distinct(8, 100)), set()))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    policy.set_busy_thresholds("m", BusyThresholds(active_prefill_tokens=1000))
    for _ in range(5):  # woken at once: not at the queue's next recheck (0.1 s), nor the next load change
        await asyncio.sleep(0)
    assert waiting.done() and waiting.result().worker.instance_id == 1


async def test_load_blind_policies_have_no_thresholds_and_affinity_forwards():
    assert RoundRobinPolicy().busy_thresholds("m") is None
    assert RoundRobinPolicy().set_busy_thresholds("m", BusyThresholds(0.5)) is None
    wrapped = with_session_affinity(KvPolicy(KvRouterConfig()), None, "hard")
    assert wrapped.set_busy_thresholds("m", BusyThresholds(0.5)) == BusyThresholds(0.5) == wrapped.busy_thresholds("m")

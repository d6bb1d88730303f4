"""least-loaded, power-of-two, direct and device-aware-weighted (router/load_policies.py): what
each picks given this router's own bookings, and that free() gives a booking back once."""

from __future__ import annotations

import random

import pytest

from dynamo.router.config import ROUTER_MODES, KvRouterConfig
from dynamo.router.load_policies import DirectPolicy, LeastLoadedPolicy, PowerOfTwoPolicy
from dynamo.router.policy import NoWorkers, Role, create_policy, policy_names
from dynamo.router.selector import WorkerHintRequired
from tests.router.test_policy import pool, req


def test_every_router_mode_dynamo_names_is_a_registered_policy():
    assert set(ROUTER_MODES) == set(policy_names())
    for mode in ROUTER_MODES:
        assert create_policy(mode, KvRouterConfig()).name == mode


async def test_least_loaded_fills_the_emptiest_worker_and_frees_once():
    policy, p = LeastLoadedPolicy(), pool(1, 2, 3)
    picks = [(await policy.select(p, req(f"r{i}", [1]), set())).worker.instance_id for i in range(6)]
    assert sorted(picks) == [1, 1, 2, 2, 3, 3]  # never two ahead of another
    policy.free("r0")
    policy.free("r0")  # idempotent: a stream may end twice
    assert policy.inflight.counts[picks[0]] == 1
    assert (await policy.select(p, req("next", [1]), set())).worker.instance_id == picks[0]


async def test_least_loaded_breaks_ties_by_the_worker_used_longest_ago():
    policy, p = LeastLoadedPolicy(), pool(1, 2)
    first = (await policy.select(p, req("a", [1]), set())).worker.instance_id
    policy.free("a")
    assert (await policy.select(p, req("b", [1]), set())).worker.instance_id != first  # both idle: the other


async def test_least_loaded_respects_exclusion_and_pins():
    policy, p = LeastLoadedPolicy(), pool(1, 2)
    for i in range(3):
        await policy.select(p, req(f"x{i}", [1], pinned=1), set())
    assert (await policy.select(p, req("y", [1]), {2})).worker.instance_id == 1  # excluded the idle one
    with pytest.raises(NoWorkers):
        await policy.select(p, req("z", [1]), {1, 2})


async def test_power_of_two_takes_the_less_loaded_of_its_pair():
    policy, p = PowerOfTwoPolicy(rng=random.Random(7)), pool(1, 2)
    for i in range(5):  # load worker 1
        await policy.select(p, req(f"busy{i}", [1], pinned=1), set())
    picks = {(await policy.select(p, req(f"r{i}", [1]), set())).worker.instance_id for i in range(3)}
    assert picks == {2}  # with two workers the pair is both: always the idle one


async def test_power_of_two_spreads_load_over_many_workers():
    policy, p = PowerOfTwoPolicy(rng=random.Random(1)), pool(*range(1, 9))
    for i in range(400):
        await policy.select(p, req(f"r{i}", [1]), set())
    counts = policy.inflight.counts
    assert len(counts) == 8 and max(counts.values()) - min(counts.values()) <= 6  # random alone would spread ~20


async def test_direct_routes_only_requests_that_name_their_worker():
    policy, p = DirectPolicy(), pool(1, 2)
    assert (await policy.select(p, req("a", [1], pinned=2), set())).worker.instance_id == 2
    with pytest.raises(WorkerHintRequired) as exc:
        await policy.select(p, req("b", [1]), set())
    assert exc.value.param == "nvext.backend_instance_id"
    with pytest.raises(WorkerHintRequired) as exc:
        await policy.select(pool(5, role=Role.PREFILL), req("c", [1]), set())
    assert exc.value.param == "nvext.prefill_worker_id"
    with pytest.raises(NoWorkers):  # named a worker that is not there
        await policy.select(p, req("d", [1], pinned=9), set())


def test_health_reports_the_mode_and_bookings():
    policy = create_policy("device-aware-weighted", KvRouterConfig())
    assert isinstance(policy, LeastLoadedPolicy) and policy.health()["router"]["router_mode"] == "device-aware-weighted"


async def test_query_names_the_pick_without_booking_it():
    policy, p = LeastLoadedPolicy(), pool(1, 2)
    await policy.select(p, req("a", [1]), set())  # worker 1 busy
    picks = [(await policy.query(p, req(f"q{i}", [1]), set())).worker.instance_id for i in range(3)]
    assert picks == [2, 2, 2] and policy.inflight.counts == {1: 1} and 2 not in policy.inflight.last_used
    with pytest.raises(WorkerHintRequired):
        await DirectPolicy().query(p, req("b", [1]), set())
    assert (await DirectPolicy().query(p, req("c", [1], pinned=2), set())).worker.instance_id == 2

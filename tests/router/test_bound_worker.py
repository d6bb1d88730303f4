"""`RoutingPolicy.bound_worker`: the worker a session is bound to in a pool (the frontend's worker sets keep a
session in its worker's namespace by it); None from policies that bind no sessions."""

from __future__ import annotations

from dynamo.router.policy import RandomPolicy, RoundRobinPolicy
from tests.router.test_policy import pool
from tests.router.test_session_affinity import TTL, Clock, affinity, route


async def test_the_bound_worker_is_the_one_the_sessions_first_request_went_to():
    clock = Clock()
    policy = affinity(clock=clock)
    p = pool(1, 2, 3)
    assert policy.bound_worker(p, "s") is None
    first = await route(policy, p, "r1", "s")
    assert policy.bound_worker(p, "s") == first and policy.bound_worker(p, "other") is None
    assert policy.bound_worker(pool(1, 2, 3, version=2), "s") == first  # the same pool, a later snapshot
    clock.now += TTL  # idle past its TTL: unbound
    assert policy.bound_worker(p, "s") is None


async def test_a_binding_whose_worker_left_the_pool_names_no_worker():
    policy = affinity()
    p = pool(1, 2)
    first = await route(policy, p, "r1", "s")
    left = pool(*({1, 2} - {first}), version=2)
    assert policy.bound_worker(left, "s") is None


def test_policies_without_sessions_bind_none():
    for policy in (RoundRobinPolicy(), RandomPolicy()):
        assert policy.bound_worker(pool(1), "s") is None

"""Local inhibition of failed workers: what is excluded and for how long, the fail-open rule
when every candidate is inhibited, the reasons taken from request-plane errors, the metrics and
the /health view, and the `DYN_INHIBITED_DURATION_SECS` setting."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.config import FrontendConfig
from dynamo.router.inhibit import Inhibitor, reason_for
from dynamo.router.policy import NoWorkers, RoundRobinPolicy
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.config import parse_config
from dynamo.runtime.rp_client import CannotConnect, Disconnected, StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode
from tests.router.test_policy import pool, req


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_inhibited_worker_is_excluded_until_the_duration_ends():
    clock = Clock()
    inh = Inhibitor(5.0, clock=clock)
    p, r = pool(1, 2, 3), req("a", [1, 2])
    assert inh.exclude(p, r, set()) == set()
    inh.inhibit(2, ErrorCode.CANNOT_CONNECT)
    assert inh.exclude(p, r, {3}) == {2, 3}
    clock.now += 4.9
    assert inh.active() == {2}
    clock.now += 0.2
    assert inh.active() == set() and inh.exclude(p, r, set()) == set()


def test_a_new_failure_extends_the_inhibition():
    clock = Clock()
    inh = Inhibitor(5.0, clock=clock)
    inh.inhibit(1, ErrorCode.CANNOT_CONNECT)
    clock.now += 4
    inh.inhibit(1, ErrorCode.DISCONNECTED)
    clock.now += 4
    assert inh.active() == {1}
    assert inh.counts == {ErrorCode.CANNOT_CONNECT: 1, ErrorCode.DISCONNECTED: 1,
                          ErrorCode.DRAINING: 0, ErrorCode.TIMEOUT: 0}


def test_zero_duration_disables_it():
    inh = Inhibitor(0)
    inh.inhibit(1, ErrorCode.DRAINING)
    assert not inh.enabled and inh.active() == set() and inh.exclude(pool(1, 2), req("a", [1]), set()) == set()
    assert inh.counts[ErrorCode.DRAINING] == 0
    with pytest.raises(ValueError):
        Inhibitor(-1)


def test_fails_open_when_every_candidate_is_inhibited():
    inh = Inhibitor(5.0, clock=Clock())
    p, r = pool(1, 2), req("a", [1])
    inh.inhibit(1, ErrorCode.CANNOT_CONNECT)
    inh.inhibit(2, ErrorCode.CANNOT_CONNECT)
    # No other candidate: route over the inhibited ones, still honouring the request's own exclusions.
    assert inh.exclude(p, r, set()) == set()
    assert inh.exclude(p, r, {1}) == {1}
    assert inh.fail_open == 2
    # Nothing left even without inhibition: the widened set, so the policy says NoWorkers.
    assert inh.exclude(p, r, {1, 2}) == {1, 2}
    assert inh.fail_open == 2


def test_a_request_pinned_to_an_inhibited_worker_still_goes_there():
    inh = Inhibitor(5.0, clock=Clock())
    inh.inhibit(2, ErrorCode.DRAINING)
    assert inh.exclude(pool(1, 2), req("a", [1], pinned=2), set()) == set()
    assert inh.exclude(pool(1, 2), req("b", [1]), set()) == {2}


def test_policy_never_picks_an_inhibited_worker_and_ends_in_no_workers():
    inh = Inhibitor(5.0, clock=Clock())
    policy, p = RoundRobinPolicy(), pool(1, 2, 3)
    inh.inhibit(2, ErrorCode.DISCONNECTED)

    async def pick(exclude):
        return (await policy.select(p, req("a", [1]), inh.exclude(p, req("a", [1]), exclude))).worker.instance_id

    async def run():
        assert {await pick(set()) for _ in range(12)} == {1, 3}
        # The dispatch loop: each failed attempt joins `exclude`; it ends, it never loops.
        assert await pick({1, 3}) == 2
        with pytest.raises(NoWorkers):
            await pick({1, 2, 3})
    asyncio.run(run())


def test_reasons_from_request_plane_errors():
    assert reason_for(CannotConnect("refused")) == ErrorCode.CANNOT_CONNECT
    assert reason_for(Disconnected()) == ErrorCode.DISCONNECTED
    assert reason_for(StreamError("bye", "draining")) == ErrorCode.DRAINING
    assert reason_for(StreamTimeout("silent")) == ErrorCode.TIMEOUT  # a worker past a caller's deadline: likely hung
    for code in ("overloaded", "bad_request", "cancelled", "internal"):
        assert reason_for(StreamError("x", code)) is None
    inh = Inhibitor(5.0, clock=Clock())
    inh.failed(7, StreamError("x", "overloaded"))
    inh.failed(8, StreamError("x", "draining"))
    assert inh.active() == {8}


def test_metrics_and_health():
    clock, registry = Clock(), CollectorRegistry()
    inh = Inhibitor(5.0, registry, "dynamo_frontend", clock=clock)
    inh.inhibit(0xAB, ErrorCode.CANNOT_CONNECT)
    inh.inhibit(0xAB, ErrorCode.CANNOT_CONNECT)
    value = registry.get_sample_value
    assert value("dynamo_frontend_worker_inhibitions_total", {"reason": "cannot_connect"}) == 2
    assert value("dynamo_frontend_worker_inhibitions_total", {"reason": ErrorCode.DRAINING}) == 0
    assert value("dynamo_frontend_inhibited_workers") == 1
    clock.now += 1
    health = inh.health()["inhibition"]
    assert health["inhibited_workers"] == {"ab": 4.0} and health["duration_secs"] == 5.0
    assert health["inhibitions_total"][ErrorCode.CANNOT_CONNECT] == 2
    clock.now += 5
    assert value("dynamo_frontend_inhibited_workers") == 0
    inh.exclude(pool(1), req("a", [1]), set())  # nothing inhibited: no fail-open counted
    assert value("dynamo_frontend_worker_inhibition_fail_open_total") == 0


def test_setting_has_dynamo_env_name_and_default(monkeypatch):
    assert parse_config(FrontendConfig, []).inhibited_duration_secs == 5.0
    monkeypatch.setenv("DYN_INHIBITED_DURATION_SECS", "0")
    assert parse_config(FrontendConfig, []).inhibited_duration_secs == 0.0
    cfg = parse_config(RouterServiceConfig, ["--endpoint", "ns.c.e", "--inhibited-duration-secs", "2.5"])
    assert cfg.inhibited_duration_secs == 2.5
    monkeypatch.setenv("DYN_INHIBITED_DURATION_SECS", "-1")
    with pytest.raises((ValueError, SystemExit)):
        parse_config(FrontendConfig, [])

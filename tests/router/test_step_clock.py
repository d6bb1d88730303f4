"""The engine-step clock (step_clock.py): step ends read from when a worker's outputs arrive, the
remaining step at a routing decision, and the kv policy preferring, of two workers equal in cache and
load, the one whose running step ends sooner."""

from __future__ import annotations

import asyncio

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.step_clock import StepClock
from tests.router.test_policy import pool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steps_of(clock: Clock, worker, ends: list[float], streams: int = 3) -> StepClock:
    steps = StepClock(clock)
    for end in ends:
        for i in range(streams):  # every running stream's token of that step, a little apart
            clock.now = end + 0.0002 * i
            steps.output(worker)
    return steps


def test_the_remaining_step_is_the_mean_step_less_the_time_since_the_last_step_end():
    clock = Clock()
    steps = steps_of(clock, "w", [100.0, 100.02, 100.04, 100.06])  # 20 ms steps, 3 streams each
    clock.now = 100.065
    assert abs(steps.wait("w") - 0.015) < 1e-3
    clock.now = 100.09  # overdue (a long prefill step, or idle): nothing known
    assert steps.wait("w") == 0.0
    assert steps.wait("other") == 0.0  # never seen


def test_an_idle_gap_is_not_a_step():
    clock = Clock()
    steps = steps_of(clock, "w", [100.0, 100.02, 105.0, 105.02])
    clock.now = 105.03
    assert abs(steps.wait("w") - 0.01) < 1e-3  # the 5 s pause did not count as a step


def choose_between_phases(first_ends_at: float, second_ends_at: float) -> int:
    """Two workers equal in cache and load, both in 30 ms steps; the worker each step of theirs ended
    at these offsets: which one the next request goes to."""
    clock = Clock()
    policy = KvPolicy(KvRouterConfig())
    p = pool(1, 2)
    policy.on_membership_change(p)
    router = policy.routes["m"].router
    router.steps = StepClock(clock)
    for start in (100.0, 100.03, 100.06):
        for worker, offset in ((1, first_ends_at), (2, second_ends_at)):
            clock.now = start + offset
            router.steps.output((worker, 0))
    clock.now = 100.088
    request = PreprocessedRequest(request_id="r", model="m", token_ids=list(range(16)))
    return asyncio.run(policy.select(p, request, set())).worker.instance_id


def test_of_two_equal_workers_the_one_whose_step_ends_sooner_is_chosen():
    """A closed-loop client's next request arrives just as its last answer ended a step: the worker
    that began a step 3 ms ago is passed by for the one whose step ends in 2 ms, either way round."""
    assert choose_between_phases(0.025, 0.0) == 2
    assert choose_between_phases(0.0, 0.025) == 1

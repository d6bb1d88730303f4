"""The engine-step clock (step_clock.py): step ends read from when a worker's outputs arrive, the
remaining step at a routing decision, and the kv policy preferring, of two workers equal in cache and
load, the one whose running step ends sooner."""

from __future__ import annotations

import asyncio

from dynamo.llm.protocol import PreprocessedRequest, RoutingHints
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.kv_router import KvRouter
from dynamo.router.selection import Selection
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
    router.costs.steps = StepClock(clock)
    for n, worker in enumerate((1, 2)):  # each runs a request: mid-step, not idle
        busy = PreprocessedRequest(request_id=f"busy{n}", model="m", token_ids=list(range(1000 * n, 1000 * n + 8)),
                                   routing=RoutingHints(backend_instance_id=worker))
        asyncio.run(policy.select(p, busy, set()))
    for start in (100.0, 100.03, 100.06):
        for worker, offset in ((1, first_ends_at), (2, second_ends_at)):
            clock.now = start + offset
            router.costs.steps.output((worker, 0))
    clock.now = 100.088
    request = PreprocessedRequest(request_id="r", model="m", token_ids=list(range(16)))
    return asyncio.run(policy.select(p, request, set())).worker.instance_id


def test_of_two_equal_workers_the_one_whose_step_ends_sooner_is_chosen():
    """A closed-loop client's next request arrives just as its last answer ended a step: the worker
    that began a step 3 ms ago is passed by for the one whose step ends in 2 ms, either way round."""
    assert choose_between_phases(0.025, 0.0) == 2
    assert choose_between_phases(0.0, 0.025) == 1


def test_an_idle_worker_has_no_step_to_wait_for():
    """Worker 1's last request ended a step a moment ago: while nothing runs there it starts the next
    request at once (no wait priced); once a request runs there, the rest of its step is priced."""
    clock = Clock()
    router = KvRouter(4, KvRouterConfig(), clock=clock)
    router.add_worker(1, 1)
    router.add_worker(2, 1)
    for start in (100.0, 100.03, 100.06):
        clock.now = start
        router.costs.steps.output((1, 0))
    clock.now = 100.061
    prompt = list(range(16))
    idle = router.select(prompt).logits
    assert abs(idle[(1, 0)] - idle[(2, 0)]) < 1e-9
    running = list(range(100, 108))
    router.add_request("running", Selection(1, 0, 0, 2), running)
    busy = router.select(prompt).logits
    assert busy[(1, 0)] - busy[(2, 0)] > 0.02  # ~29 ms of step left, more than one request's load

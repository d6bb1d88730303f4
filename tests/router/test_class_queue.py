"""The classes of a router queue (router/class_queue.py): NVIDIA Dynamo's weighted deficit round
robin between them (quantum in uncached prompt tokens per ring round, a request's price its uncached
prompt tokens), classes whose head cannot be placed passed over, per-class limits per worker."""

from __future__ import annotations

import itertools

from dynamo.router.class_queue import ClassQueues, Ticket
from dynamo.router.policy_profile import PolicyClass

_seq = itertools.count()


def ticket(klass: int, cost: int = 1, prompt: int = 0, cached: int = 0, strict: int = 0) -> Ticket:
    return Ticket((-strict, 0.0, next(_seq)), 0.0, klass, cost, prompt, cached)


def drain(queues: ClassQueues, n: int, names: str) -> str:
    """The classes of the next `n` waiters served, one letter per class."""
    served = []
    for _ in range(n):
        head = queues.head()
        queues.served(head)
        head.gone = True
        queues.remove(head)
        served.append(names[head.klass])
    return "".join(served)


def test_quanta_share_dispatches_between_backlogged_classes():
    queues = ClassQueues([PolicyClass("a", quantum=3), PolicyClass("b", quantum=1)], recheck=0.1)
    for _ in range(12):
        queues.push(ticket(0))
        queues.push(ticket(1))
    assert drain(queues, 12, "ab") == "aaabaaabaaab"


def test_shares_are_in_prompt_tokens_so_long_prompts_cannot_starve_short_ones():
    queues = ClassQueues([PolicyClass("short", quantum=100), PolicyClass("long", quantum=100)], recheck=0.1)
    for _ in range(40):
        queues.push(ticket(0, cost=50))
    for _ in range(10):
        queues.push(ticket(1, cost=400))
    assert drain(queues, 36, "sl") == "ssssssssl" * 4  # 400 uncached tokens each per turn: equal quanta, equal shares


def test_a_class_spends_credit_left_from_its_turn_before_the_ring_moves_on():
    queues = ClassQueues([PolicyClass("a", quantum=10), PolicyClass("b", quantum=10)], recheck=0.1)
    for _ in range(4):
        queues.push(ticket(0, cost=4))
        queues.push(ticket(1, cost=4))
    assert drain(queues, 6, "ab") == "aabbaa"  # 10 credits pay for two requests of 4


def test_head_looks_without_spending():
    queues = ClassQueues([PolicyClass("a", quantum=1), PolicyClass("b", quantum=1)], recheck=0.1)
    first, second = ticket(0, cost=5), ticket(1, cost=1)
    queues.push(first)
    queues.push(second)
    assert queues.head() is queues.head() is second  # b affords its head in fewer rounds
    assert queues._deficit == [0, 0]


def test_a_class_that_cannot_place_its_head_is_passed_over_until_load_is_released_or_a_recheck():
    now = [0.0]
    queues = ClassQueues([PolicyClass("a"), PolicyClass("b")], recheck=0.1, clock=lambda: now[0])
    a, b = ticket(0), ticket(1)
    queues.push(a)
    queues.push(b)
    assert queues.head() is a
    queues.pass_over(0)
    assert queues.head() is b
    queues.pass_over(1)
    assert queues.head() is None  # nobody can be placed: wait for a release or a recheck
    queues.reopen()
    assert queues.head() is a
    queues.pass_over(0)
    now[0] = 0.1
    assert queues.head() is a  # the recheck interval passed: it tries again


def test_limits_are_per_worker_and_refuse_only_at_the_limit():
    limited = PolicyClass("c", request_queue_limit_per_worker=1, raw_isl_token_queue_limit_per_worker=100,
                          cached_token_queue_limit_per_worker=10)
    queues = ClassQueues([limited, PolicyClass("free")], recheck=0.1)
    assert queues.limit_reached(0, workers=2) is None
    queues.push(ticket(0, prompt=300, cached=0))  # crosses the token limit (200): accepted, as in Dynamo
    assert queues.limit_reached(0, workers=2) == ("router policy class 'c' queue raw_isl_tokens limit reached "
                                                  "(current=300, limit=200)")
    assert queues.limit_reached(0, workers=4) is None and queues.limit_reached(1, workers=1) is None
    queues.push(ticket(0, prompt=50, cached=40))
    assert "queue requests limit reached (current=2, limit=2)" in queues.limit_reached(0, workers=2)
    queues.push(ticket(0, prompt=1, cached=50))
    assert "queue cached_tokens limit reached (current=90, limit=40)" in queues.limit_reached(0, workers=4)


def test_an_emptied_class_loses_its_credit():
    queues = ClassQueues([PolicyClass("a", quantum=10), PolicyClass("b", quantum=1)], recheck=0.1)
    only = ticket(0, cost=1)
    queues.push(only)
    queues.push(ticket(1, cost=5))
    assert drain(queues, 1, "ab") == "a" and queues._deficit[0] == 0
    stats = {s["name"]: s for s in queues.stats()}
    assert stats["b"]["pending"] == 1 and stats["a"]["pending"] == 0 and stats["a"]["quantum"] == 10

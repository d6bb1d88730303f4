"""The classes of one pool's router queue (a `--router-policy-config` profile's; one class without
one) and NVIDIA Dynamo's order between them: weighted deficit round robin.

Each class keeps its waiters in its own order (strict tier, then its queue policy's score). Between
classes runs a ring of deficit counters: a class whose head costs more than its credit earns its
`quantum` when the ring visits it; a head is dispatched once its cost (its uncached prompt tokens, at
least 1) fits its class's credit, which then pays for it. Backlogged classes thus get dispatches
worth their quanta's shares of prompt tokens: long prompts in one class cannot starve short ones in
another. A class whose head cannot be placed (every worker busy by that class's thresholds) is
passed over until load is released or a recheck interval passes, as Dynamo skips a class whose head
is not dispatchable. Per-class limits (requests, prompt tokens, cached prompt tokens; each per
worker of the pool) refuse a request that finds its class at a limit, as in Dynamo (the request
that crosses one is accepted).

Pure bookkeeping: the waiting, waking and deadlines are router_queue.py's.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from dynamo.router.policy_profile import PolicyClass


@dataclass(order=True)
class Ticket:
    """A request's place in the queue; `order` sorts its class's head first."""

    order: tuple[int, float, int]
    deadline: float = field(compare=False)
    klass: int = field(default=0, compare=False)
    cost: int = field(default=1, compare=False)  # uncached prompt tokens, at least 1: its price in the ring
    prompt_tokens: int = field(default=0, compare=False)
    cached_tokens: int = field(default=0, compare=False)
    waker: asyncio.Future | None = field(default=None, compare=False)
    gone: bool = field(default=False, compare=False)
    allowed: frozenset[int] = field(default=frozenset(), compare=False)  # the workers it may go to
    ahead: bool = field(default=False, compare=False)  # woken to try before its turn (router_queue.py)


@dataclass
class ClassLoad:
    """What waits in one class (what its limits are measured against)."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def add(self, ticket: Ticket, sign: int = 1) -> None:
        self.requests += sign
        self.prompt_tokens += sign * ticket.prompt_tokens
        self.cached_tokens += sign * ticket.cached_tokens


class ClassQueues:
    def __init__(self, classes: Sequence[PolicyClass], recheck: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.classes = tuple(classes)
        self.load = [ClassLoad() for _ in self.classes]
        self._heaps: list[list[Ticket]] = [[] for _ in self.classes]
        self._deficit = [0] * len(self.classes)
        self._cursor = 0  # where the ring's next visit starts: after the class served last
        self._carry: int | None = None  # the class served last, while it has credit left
        self._passed: dict[int, float] = {}  # class -> when its head could not be placed
        self._recheck = recheck
        self._clock = clock

    def limit_reached(self, klass: int, workers: int) -> str | None:
        """Why a request of class `klass` is refused (a limit its class is at), or None."""
        c, load = self.classes[klass], self.load[klass]
        for what, current, per_worker in (("requests", load.requests, c.request_queue_limit_per_worker),
                                          ("raw_isl_tokens", load.prompt_tokens, c.raw_isl_token_queue_limit_per_worker),
                                          ("cached_tokens", load.cached_tokens, c.cached_token_queue_limit_per_worker)):
            if per_worker is not None and current >= per_worker * workers:
                return (f"router policy class {c.name!r} queue {what} limit reached (current={current}, "
                        f"limit={per_worker * workers})")
        return None

    def push(self, ticket: Ticket) -> None:
        heapq.heappush(self._heaps[ticket.klass], ticket)
        self.load[ticket.klass].add(ticket)

    def remove(self, ticket: Ticket) -> None:
        """`ticket` stopped waiting (its heap entry goes lazily); an emptied class loses its credit."""
        load = self.load[ticket.klass]
        load.add(ticket, -1)
        if load.requests == 0:
            self._deficit[ticket.klass] = 0
            self._carry = None if self._carry == ticket.klass else self._carry

    def pass_over(self, klass: int) -> None:
        """The class's head could not be placed: other classes' heads go first for a recheck interval."""
        self._passed[klass] = self._clock()

    def reopen(self) -> None:
        """Load was released: every class may place its head again."""
        self._passed.clear()

    def head(self) -> Ticket | None:
        """The waiter the ring serves next (credits unchanged)."""
        heads = self._heads()
        chosen = self._choose(heads, list(self._deficit))
        return None if chosen is None else heads[chosen]

    def served(self, ticket: Ticket) -> None:
        """`ticket` was placed: the ring turns as it turned to serve it, and its class pays its cost."""
        heads = self._heads()
        heads[ticket.klass] = ticket
        self._choose(heads, self._deficit)
        k = ticket.klass
        self._deficit[k] = max(self._deficit[k] - ticket.cost, 0)
        self._cursor = (k + 1) % len(self.classes)
        self._carry = k if self._deficit[k] > 0 and self.load[k].requests > 1 else None

    def _heads(self) -> dict[int, Ticket]:
        now = self._clock()
        heads = {}
        for k, heap in enumerate(self._heaps):
            while heap and heap[0].gone:
                heapq.heappop(heap)
            if heap and now - self._passed.get(k, -math.inf) >= self._recheck:
                heads[k] = heap[0]
        return heads

    def _choose(self, heads: dict[int, Ticket], deficit: list[int]) -> int | None:
        """Dynamo's ring pass over the classes' heads, crediting `deficit` as it goes; the class served."""
        if not heads:
            return None
        if self._carry in heads and heads[self._carry].cost <= deficit[self._carry]:
            return self._carry  # credit left from its last turn is spent first
        ring = [k for k in ((self._cursor + i) % len(self.classes) for i in range(len(self.classes))) if k in heads]
        for k in ring:
            if heads[k].cost > deficit[k]:
                deficit[k] += self.classes[k].quantum
            if heads[k].cost <= deficit[k]:
                return k
        # No head affordable after one round: grant the fewest whole rounds that make one so.
        rounds = min(math.ceil((heads[k].cost - deficit[k]) / self.classes[k].quantum) for k in ring)
        for k in ring:
            deficit[k] += rounds * self.classes[k].quantum
        return next(k for k in ring if heads[k].cost <= deficit[k])

    def waiting(self) -> list[Ticket]:
        return [t for heap in self._heaps for t in heap if not t.gone]

    def stats(self) -> list[dict]:
        return [{"name": c.name, "queue_policy": c.queue_policy, "quantum": c.quantum,
                 "prefill_busy_threshold": c.prefill_busy_threshold,
                 "prefill_busy_threshold_frac": c.prefill_busy_threshold_frac,
                 "request_queue_limit_per_worker": c.request_queue_limit_per_worker,
                 "raw_isl_token_queue_limit_per_worker": c.raw_isl_token_queue_limit_per_worker,
                 "cached_token_queue_limit_per_worker": c.cached_token_queue_limit_per_worker,
                 "pending": load.requests, "pending_isl_tokens": load.prompt_tokens,
                 "pending_cached_tokens": load.cached_tokens}
                for c, load in zip(self.classes, self.load)]

"""The router-side queue of one pool: when every worker is busy (busy thresholds, or the
prefill saturation of `--router-queue-threshold`), a request waits here, bounded in number
and in time, instead of failing at once with 503.

Waiters are ordered as NVIDIA Dynamo orders its queue, by `(strict_priority, score)`, higher
first, where the score follows `--router-queue-policy`:
- `fcfs`: priority - arrival time (seconds): oldest first, a priority jumps the line by that
  many seconds; bounds the tail TTFT.
- `wspt`: (1 + priority) / new prefill tokens (Smith's rule): the least prefill work first;
  lowers the mean TTFT.
- `lcfs`: priority + arrival time: newest first (for comparisons).
Clients' strict tiers are >= 0; background work (the Batch API's requests) waits in tier -1, after
every client's request.

Only the head of the queue retries its selection: it is woken whenever load is released
(first token, end of a request) or membership changes. Workers' own load reports also free
capacity (they lag our bookings), so the head retries at least every `RECHECK` seconds.
A newcomer that finds a worker with room is served at once, as in Dynamo.

A waiter may be held to some of the pool's workers (pinned by a gateway, a worker set during a
rolling update, workers it failed on). When the head cannot be placed, the workers it tried are
known busy until load is released here or a recheck interval passes (load reports free workers unseen
here); the first waiter of its class behind it that may go to a worker not known busy tries at once
instead of waiting for the head (backfill): a request pinned to a busy worker
no longer holds up requests that another worker with room could serve. Unconstrained waiters never
jump one another: when the head, which may go anywhere, finds every worker busy, so would they.

With a `--router-policy-config` profile the queue is split into its classes, each with its own
policy and limits, served by weighted deficit round robin (class_queue.py); the head is the
waiter that ring serves next.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from dynamo.router.class_queue import ClassQueues, Ticket
from dynamo.router.config import KvRouterConfig
from dynamo.router.policy_profile import PolicyProfile
from dynamo.router.selector import AllWorkersBusy, BusyThresholds

RECHECK = 0.1
__all__ = ["RouterQueue", "Ticket", "RECHECK"]


def _raise_if_cancelled() -> None:
    """Python 3.11's wait_for can swallow a cancel that lands as its wait ends (a timeout or a wake-up
    at the same moment): the task is still asked to stop (`cancelling()`), so stop it here, or a client
    that left would keep its place and its request would be routed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RouterQueue:
    def __init__(self, config: KvRouterConfig, profile: PolicyProfile | None = None) -> None:
        self.max_waiting = config.router_queue_max_requests
        self.timeout = config.router_queue_timeout_secs
        self.profile = profile or PolicyProfile.synthetic(config.router_queue_threshold, config.router_queue_policy)
        self.classes = ClassQueues(self.profile.classes, RECHECK)
        self._seq = itertools.count()
        self._started = time.monotonic()
        self._pending = 0
        self.queued_total = 0
        self.timed_out = 0
        self.rejected = 0
        self.rejected_limit = 0
        self._closed = False
        # class -> (when, workers found busy by its thresholds since then): what backfill skips. It holds until load
        # is released here or RECHECK passes (workers' load reports and peers' frees release load unseen here).
        self._busy: dict[int, tuple[float, set[int]]] = {}

    @property
    def policy(self) -> str:
        """The queue policy of the default class (the only one without a policy profile)."""
        return self.profile.default_class.queue_policy

    def score(self, priority: float = 0.0, new_tokens: int = 1, klass: int | None = None) -> float:
        """The score of a request arriving now by its class's policy (higher: served sooner)."""
        policy = self.policy if klass is None else self.profile.classes[klass].queue_policy
        jump = max(priority, 0.0)
        if policy == "wspt":
            return (1.0 + jump) / max(new_tokens, 1)
        arrival = time.monotonic() - self._started
        return jump + arrival if policy == "lcfs" else jump - arrival

    def class_thresholds(self, klass: int, busy: BusyThresholds) -> BusyThresholds:
        """The operator's busy thresholds `busy` with class `klass`'s prefill thresholds."""
        c = self.profile.classes[klass]
        return busy.with_prefill(c.prefill_busy_threshold, c.prefill_busy_threshold_frac)

    def enter(self, score: float = 0.0, strict_priority: int = 0, klass: int | None = None, new_tokens: int = 1,
              prompt_tokens: int = 0, workers: int = 1, allowed: frozenset[int] = frozenset()) -> Ticket:
        """A request of class `klass` (default: the profile's default), which found each of the workers
        `allowed` to it busy, starts waiting; AllWorkersBusy at once when the queue is off, closed or full,
        or its class is at one of its limits."""
        klass = self.profile.class_index(None, 0) if klass is None else klass
        if self._closed or self.max_waiting <= 0 or self._pending >= self.max_waiting:
            self.rejected += 1
            raise AllWorkersBusy("All workers are busy, please retry later")
        limit = self.classes.limit_reached(klass, workers)
        if limit is not None:
            self.rejected_limit += 1
            raise AllWorkersBusy(f"All workers are busy, please retry later ({limit})")
        loop = asyncio.get_running_loop()
        ticket = Ticket((-strict_priority, -score, next(self._seq)), loop.time() + self.timeout, klass,
                        max(new_tokens, 1), prompt_tokens, max(prompt_tokens - new_tokens, 0), allowed=allowed)
        self.classes.push(ticket)
        self._found_busy(klass, allowed)
        self._pending += 1
        self.queued_total += 1
        return ticket

    async def wait(self, ticket: Ticket) -> None:
        """Return when `ticket` heads the queue and load may have been released (woken, or a
        recheck interval passed); AllWorkersBusy once its deadline has passed."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = ticket.deadline - loop.time()
            if self._closed or remaining <= 0:
                self.leave(ticket)
                if not self._closed:
                    self.timed_out += 1
                raise AllWorkersBusy("All workers are busy, please retry later (timed out in the router queue)")
            ticket.waker = loop.create_future()
            try:
                await asyncio.wait_for(ticket.waker, min(remaining, RECHECK))
            except asyncio.TimeoutError:
                pass
            _raise_if_cancelled()
            # Woken, or a recheck (a load report may have freed a worker): the head retries. Still the head: a
            # release of load since it was woken may have put another class's head first again.
            if self._head() is ticket or ticket.ahead:
                ticket.ahead = False
                return

    def leave(self, ticket: Ticket, served: bool = False) -> None:
        """The request stops waiting (served, timed out or cancelled); idempotent."""
        if not ticket.gone:
            if served:
                self.classes.served(ticket)
            ticket.gone = True
            self.classes.remove(ticket)
            self._pending -= 1

    def _head(self) -> Ticket | None:
        return self.classes.head()

    def wake(self) -> None:
        """Load was released: the head retries (once served, it wakes the next)."""
        self._busy.clear()
        self.classes.reopen()
        self._wake_head()

    def wake_next(self) -> None:
        """A waiter left (served, timed out, cancelled): the next head retries, but a class passed over
        stays so until load is released (`wake`): serving a waiter added load, it freed none."""
        self._wake_head()

    def passed_over(self, ticket: Ticket) -> None:
        """`ticket`'s retry found every worker allowed to it busy by its class's thresholds: its class waits a
        recheck interval (or a release of load) while the next class's head tries, and a waiter that may go
        to a worker not known busy tries before its turn."""
        self._found_busy(ticket.klass, ticket.allowed)
        if len(self.profile.classes) > 1:  # one class: its head simply retries at the next recheck
            self.classes.pass_over(ticket.klass)
            self._wake_head()
        self._backfill(ticket.klass)

    def _found_busy(self, klass: int, workers: frozenset[int]) -> None:
        now = time.monotonic()
        since, busy = self._busy.get(klass, (now, set()))
        if now - since > RECHECK:  # too old to trust: a load report may have freed any of them since
            since, busy = now, set()
        self._busy[klass] = (since, busy | workers)

    def _backfill(self, klass: int) -> None:
        """Wake the first waiter of class `klass` allowed a worker the class has not found busy lately (other
        classes take their turns by the ring: their scores are not comparable with this class's)."""
        busy = self._busy[klass][1]
        ticket = min((t for t in self.classes.waiting() if t.klass == klass and t.allowed - busy),
                     default=None)  # none: every waiter's workers are known busy (always so when none is held)
        if ticket is not None and not ticket.ahead:  # else it is about to try: if it fails, it goes on from here
            ticket.ahead = True
            if ticket.waker is not None and not ticket.waker.done():
                ticket.waker.set_result(None)

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None and head.waker is not None and not head.waker.done():
            head.waker.set_result(None)

    def close(self) -> None:
        self._closed = True
        for ticket in self.classes.waiting():
            if ticket.waker is not None and not ticket.waker.done():
                ticket.waker.set_result(None)

    @property
    def pending(self) -> int:
        return self._pending

    def stats(self) -> dict:
        return {"pending": self.pending, "queued_total": self.queued_total, "timed_out": self.timed_out,
                "rejected_full": self.rejected, "rejected_class_limit": self.rejected_limit, "policy": self.policy,
                "profile": self.profile.source, "classes": self.classes.stats()}

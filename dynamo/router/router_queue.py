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
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field

from dynamo.router.config import KvRouterConfig
from dynamo.router.selector import AllWorkersBusy

RECHECK = 0.1


@dataclass(order=True)
class Ticket:
    """A request's place in the queue; `order` sorts the head first."""

    order: tuple[int, float, int]
    deadline: float = field(compare=False)
    waker: asyncio.Future | None = field(default=None, compare=False)
    gone: bool = field(default=False, compare=False)


def _raise_if_cancelled() -> None:
    """Python 3.11's wait_for can swallow a cancel that lands as its wait ends (a timeout or a wake-up
    at the same moment): the task is still asked to stop (`cancelling()`), so stop it here, or a client
    that left would keep its place and its request would be routed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RouterQueue:
    def __init__(self, config: KvRouterConfig) -> None:
        self.max_waiting = config.router_queue_max_requests
        self.timeout = config.router_queue_timeout_secs
        self.policy = config.router_queue_policy
        self._heap: list[Ticket] = []
        self._seq = itertools.count()
        self._started = time.monotonic()
        self._pending = 0
        self.queued_total = 0
        self.timed_out = 0
        self.rejected = 0
        self._closed = False

    def score(self, priority: float = 0.0, new_tokens: int = 1) -> float:
        """The policy's score of a request arriving now (higher: served sooner)."""
        jump = max(priority, 0.0)
        if self.policy == "wspt":
            return (1.0 + jump) / max(new_tokens, 1)
        arrival = time.monotonic() - self._started
        return jump + arrival if self.policy == "lcfs" else jump - arrival

    def enter(self, score: float = 0.0, strict_priority: int = 0) -> Ticket:
        """A request starts waiting; AllWorkersBusy at once when the queue is off, closed or full."""
        if self._closed or self.max_waiting <= 0 or self._pending >= self.max_waiting:
            self.rejected += 1
            raise AllWorkersBusy("All workers are busy, please retry later")
        loop = asyncio.get_running_loop()
        ticket = Ticket((-strict_priority, -score, next(self._seq)), loop.time() + self.timeout)
        heapq.heappush(self._heap, ticket)
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
                woken = True
            except asyncio.TimeoutError:
                woken = False
            _raise_if_cancelled()
            if woken or self._head() is ticket:
                return  # woken, or a recheck: a load report may have freed a worker

    def leave(self, ticket: Ticket) -> None:
        """The request stops waiting (served, timed out or cancelled); idempotent."""
        if not ticket.gone:
            ticket.gone = True
            self._pending -= 1

    def _head(self) -> Ticket | None:
        while self._heap and self._heap[0].gone:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def wake(self) -> None:
        """Load was released: the head retries (once served, it wakes the next)."""
        head = self._head()
        if head is not None and head.waker is not None and not head.waker.done():
            head.waker.set_result(None)

    def close(self) -> None:
        self._closed = True
        for ticket in self._heap:
            if ticket.waker is not None and not ticket.waker.done():
                ticket.waker.set_result(None)

    @property
    def pending(self) -> int:
        return self._pending

    def stats(self) -> dict:
        return {"pending": self.pending, "queued_total": self.queued_total, "timed_out": self.timed_out,
                "rejected_full": self.rejected, "policy": self.policy}

"""The router-side queue: when every worker is busy (busy thresholds), a request waits
here, bounded in number and in time, instead of failing at once with 503. It is woken
whenever load is released (first token, end of a request) or membership changes, and
retries its selection; waiters are woken first come, first served. Workers' own load
reports also free capacity (they lag our bookings), so a waiter retries at least every
`RECHECK` seconds as well.
"""

from __future__ import annotations

import asyncio
from collections import deque

from dynamo.router.config import KvRouterConfig
from dynamo.router.selector import AllWorkersBusy

RECHECK = 0.1


class RouterQueue:
    def __init__(self, config: KvRouterConfig) -> None:
        self.max_waiting = config.router_queue_max_requests
        self.timeout = config.router_queue_timeout_secs
        self._waiters: deque[asyncio.Future] = deque()
        self.queued_total = 0
        self.timed_out = 0
        self.rejected = 0
        self._closed = False

    def enter(self) -> float:
        """A request starts waiting: its deadline."""
        self.queued_total += 1
        return asyncio.get_running_loop().time() + self.timeout

    async def wait(self, deadline: float) -> None:
        """Wait for load to be released; AllWorkersBusy when the queue is full or time is up."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if self._closed or self.max_waiting <= 0 or len(self._waiters) >= self.max_waiting:
            self.rejected += 1
            raise AllWorkersBusy("All workers are busy, please retry later")
        if remaining <= 0:
            self.timed_out += 1
            raise AllWorkersBusy("All workers are busy, please retry later (timed out in the router queue)")
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), min(remaining, RECHECK))
        except asyncio.TimeoutError:
            pass  # recheck: a load report may have freed a worker
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not waiter.done():
                waiter.cancel()

    def wake(self) -> None:
        """Load was released: let the oldest waiter retry (it wakes the next if it fits too)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._waiters)

    def stats(self) -> dict:
        return {"pending": self.pending, "queued_total": self.queued_total, "timed_out": self.timed_out,
                "rejected_full": self.rejected}

"""Requests the router service holds while its pool has no worker to take them
(`python -m dynamo.router --wait-for-workers-secs N`): a pool scaled to zero, or its only worker restarting.

Without the setting the service answers `no_workers` at once, as NVIDIA Dynamo's does; the caller (a
frontend, or a global router in front of several pools) then fails the request, and an autoscaler that
scales the pool on its demand never sees any. With it, a request waits up to N s for a worker of the pool
(one it has not already found unreachable), counted meanwhile in
`dynamo_component_router_requests_waiting_for_workers`, which a KEDA trigger can scale that one pool up
from zero on. A caller that goes away ends the wait.

One wait is always on, however short the setting: a pool whose workers are in discovery but not yet in
the router's view (its watch lags a registration by a moment, as when a global router sends the first
request the instant a pool looks ready) waits up to `CATCH_UP_SECS` for the view to catch up.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from prometheus_client import CollectorRegistry, Gauge

CATCH_UP_SECS = 5.0  # a loaded machine's watch can lag a registration by seconds
CANCEL_POLL_SECS = 0.5  # a caller's leaving is a flag on its request context, not an event: look this often


class PoolWait:
    """The requests one router service holds for a worker (the one owner of their count)."""

    def __init__(self, wait_secs: float, registry: CollectorRegistry, endpoint: tuple[str, str, str]) -> None:
        self.wait_secs = wait_secs
        self.waiting = 0
        self._changed = asyncio.Event()
        self._gauge = Gauge("dynamo_component_router_requests_waiting_for_workers",
                            "Requests the router holds because no worker of its pool can take them",
                            ["dynamo_namespace", "dynamo_component", "dynamo_endpoint"], registry=registry)
        self._gauge.labels(*endpoint).set_function(lambda: self.waiting)  # the pool's workers' endpoint

    def membership_changed(self) -> None:
        """The pool's worker set changed: every waiter looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def until_worker(self, usable: Callable[[], bool], lagging: Callable[[], Awaitable[bool]],
                           stopped: Callable[[], bool]) -> bool:
        """Wait until `usable()`: True when it is, False at the deadline or once `stopped()`. The deadline is
        the setting, or `CATCH_UP_SECS` when the setting is shorter and discovery holds workers the pool
        does not have yet (`lagging()`)."""
        limit = self.wait_secs
        if limit < CATCH_UP_SECS and await lagging():
            limit = CATCH_UP_SECS
        if limit <= 0:
            return usable()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        self.waiting += 1
        try:
            while not usable():
                left = deadline - loop.time()
                if left <= 0 or stopped():
                    return False
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), min(left, CANCEL_POLL_SECS))
                except asyncio.TimeoutError:
                    pass
            return True
        finally:
            self.waiting -= 1

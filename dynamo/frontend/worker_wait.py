"""Requests for a model that has no worker right now, held until one comes back
(`--wait-for-workers-secs`): a model scaled to zero by an autoscaler, or its only worker restarting.

NVIDIA Dynamo drops such a model (404), so an autoscaler that scales on demand never sees any and a
worker scaled to zero never comes back (its autoscaling guide's scale-to-zero limitation). Here the
model stays listed, a request for it waits (bounded by the setting, the frontend's concurrency limit
and a drain) and counts in `dynamo_frontend_queued_requests{model}` meanwhile: the demand a KEDA
trigger or an HPA scales the worker up from zero on. A client that goes away stops its wait. A request
under way that lost the model's last worker (a migration) waits for the next one the same way (`for_request`).
"""

from __future__ import annotations

import asyncio
from typing import Callable

from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager


class WorkerWait:
    """One frontend's requests waiting for their model to have a worker (the one owner of their count)."""

    def __init__(self, models: ModelManager, metrics: FrontendMetrics, wait_secs: float) -> None:
        self.models = models
        self.metrics = metrics
        self.wait_secs = wait_secs
        self.waiting = 0  # requests held now, all models: they count against the concurrency limit
        models.list_retired = self.enabled

    @property
    def enabled(self) -> bool:
        return self.wait_secs > 0

    def would_wait(self, name: str) -> bool:
        """Whether a request for `name` waits instead of a 503 (or a 404): a model that had workers and has
        none now, or one the frontend was told to expect (`--model-name`) that no worker registered yet."""
        return self.enabled and self.models.knows(name) and not self.models.has_workers(name)

    async def for_request(self, name: str, handle, exclude: set[int]):
        """A request under way that lost its model's last worker (migrating, or refused by a draining one):
        wait for a worker it may go to; the model's entry then, None at the deadline or once the client left."""
        def usable() -> bool:
            entry = self.models.get(name)
            return entry is not None and any(w.instance_id not in exclude for w in entry.decode_workers())

        self.waiting += 1
        deadline = asyncio.get_running_loop().time() + self.wait_secs
        try:
            while not usable() and not handle.cancelled:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return None
                # the client's leaving comes as handle.cancel(), not as a discovery change: look twice a second
                await self.models.wait_for(lambda: usable() or handle.cancelled, min(left, 0.5))
            return self.models.get(name) if usable() else None
        finally:
            self.waiting -= 1

    async def until_served(self, name: str, receive: Callable, stop: Callable[[], bool]) -> bool:
        """Hold the request until `name` has a worker (True), or its time is up or `stop()` (a drain)
        turns true (False). ConnectionError when the client leaves first."""
        return await self.until(lambda: self.models.has_workers(name), receive, stop)

    async def until(self, ready: Callable[[], bool], receive: Callable, stop: Callable[[], bool]) -> bool:
        """Hold the request until `ready()` (True: a discovery change made it so), or its time is up or `stop()`
        turns true (False). ConnectionError when the client leaves first."""
        self.waiting += 1  # in dynamo_frontend_queued_requests meanwhile (no first response yet: demand.py)
        served = asyncio.ensure_future(self.models.wait_for(lambda: ready() or stop(), self.wait_secs))
        client = asyncio.ensure_future(receive())  # the body is read: the next message is a disconnect
        try:
            await asyncio.wait((served, client), return_when=asyncio.FIRST_COMPLETED)
            if not served.done():
                if not client.cancelled():
                    client.exception()  # retrieved: a failed receive means the client is gone too
                self.metrics.disconnects.inc()
                raise ConnectionError("client disconnected while waiting for a worker")
            return ready()
        finally:
            for task in (served, client):
                task.cancel()
            self.waiting -= 1

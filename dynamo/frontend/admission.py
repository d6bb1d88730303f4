"""Which requests the frontend lets in, and how many it is serving: the one owner of its drain state,
its in-flight count (which a drain waits on), the concurrency limit (the config's
`rejection_frontend_request_concurrency_limit`, counting requests held for a worker too) and the model
entry a request goes to, once some worker serves it (`--wait-for-workers-secs` holds it until then:
`worker_wait.py`).

Each refusal is the HTTP error `errors.py` writes for it; one for want of capacity (`no_workers`,
`overloaded`) also counts in `dynamo_frontend_model_rejection_total` under its code.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from dynamo.frontend import errors
from dynamo.frontend.errors import OVERLOADED_STATUS, ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.worker_wait import WorkerWait


class Admission:
    def __init__(self, models: ModelManager, metrics: FrontendMetrics, concurrency_limit: int = 0,
                 overload_status: int = OVERLOADED_STATUS, wait_for_workers: float = 0.0) -> None:
        self.models = models
        self.metrics = metrics
        self.concurrency_limit = concurrency_limit
        self.overload_status = overload_status
        self.worker_wait = WorkerWait(models, metrics, wait_for_workers)
        self.inflight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- drain ---------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """From now on /health says 503 and new generation requests get 503; admitted ones run on."""
        self.draining = True

    async def drained(self, timeout: float) -> bool:
        """Wait (bounded) until no generation request is in flight."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise errors.shutting_down()

    # -- capacity ------------------------------------------------------------------------------
    def refuse_if_overloaded(self, model: str) -> None:
        if self.concurrency_limit and self.inflight + self.worker_wait.waiting >= self.concurrency_limit:
            raise self.rejected(model, errors.too_many_requests(self.overload_status))

    def rejected(self, model: str, error: ApiError) -> ApiError:
        """`error`, counted in the rejection metric under its code (`no_workers`, `overloaded`)."""
        self.metrics.rejections.labels(model, error.code).inc()
        return error

    def admit(self, model: str) -> None:
        self.inflight += 1
        self._idle.clear()
        self.metrics.inflight.labels(model).inc()

    def release(self, model: str) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
        self.metrics.inflight.labels(model).dec()

    # -- the model's entry ---------------------------------------------------------------------
    def entry_for(self, name: str):
        """`name`'s entry now: a 404 for a model the frontend does not know, a 503 for one without workers."""
        entry = self.models.get(name)
        if entry is None and name not in self.models.retired:
            raise errors.model_not_found(name)
        if entry is None or not entry.decode_workers():
            raise self.rejected(name, errors.no_workers(name))
        return entry

    async def served_entry(self, name: str, receive: Callable):
        """`name`'s entry once some worker serves it: at once, or after waiting for one where the
        model's workers are all gone and --wait-for-workers-secs holds its requests."""
        if self.worker_wait.would_wait(name):
            self.refuse_if_overloaded(name)
            if not await self.worker_wait.until_served(name, receive, lambda: self.draining):
                self.refuse_if_draining()
                raise self.rejected(name, errors.no_workers(name, self.worker_wait.wait_secs))
        return self.entry_for(name)

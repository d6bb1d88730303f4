"""Where one request is in the worker path, for the HTTP layer (`RequestHandle`): the worker stream or the
routing wait a client's departure (or a shutdown past its grace) interrupts, and who serves the request
(decode and prefill worker, cached blocks) for the response's `nvext`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Coroutine

from dynamo.frontend import errors
from dynamo.llm.worker_client import WorkerStream
from dynamo.router.policy import Choice


class RequestHandle:
    """Lets the HTTP layer cancel whatever worker stream the request is on now."""

    __slots__ = ("stream", "cancelled", "shut", "routing", "worker_id", "dp_rank", "overlap_blocks",
                 "prefill_worker_id", "prefill_dp_rank", "prefill_started")

    def __init__(self) -> None:
        self.stream: WorkerStream | None = None
        self.cancelled = False
        self.shut = False  # the frontend is exiting past its grace: end as `shutting_down`
        # The task while it waits for the routing policy (the router queue): a client that leaves
        # then gives its place up at once, not at the queue's deadline.
        self.routing: asyncio.Task | None = None
        # Who serves the request (nvext.extra_fields "worker_id"): the decode worker now, its cached
        # blocks as the router saw them, and a prefill worker when one prefilled it.
        self.worker_id: int | None = None
        self.dp_rank = 0
        self.overlap_blocks: int | None = None  # None: the routing policy does not look at caches
        self.prefill_worker_id: int | None = None
        self.prefill_dp_rank = 0
        # When the first worker stream opened (a prefill worker's, else the decode worker's), on the
        # monotonic clock: where the request's prefill began (nvext timing), whatever migrated later.
        self.prefill_started: float | None = None

    def prefilled_by(self) -> tuple[int, int, str] | None:
        """(instance id, dp rank, worker type) of the worker that prefilled the request: a prefill
        worker's when one did, else the decode worker's; None before any worker was chosen."""
        if self.prefill_worker_id is not None:
            return self.prefill_worker_id, self.prefill_dp_rank, "prefill"
        if self.worker_id is not None:
            return self.worker_id, self.dp_rank, "decode"
        return None

    def cancel(self) -> None:
        """The client went away: stop the worker and end quietly."""
        self.cancelled = True
        self._interrupt()

    async def routed(self, choosing: Coroutine[Any, Any, Choice]) -> Choice | None:
        """The routing policy's choice, or None once the client has left: cancel() interrupts a wait
        in the router queue (its place given up as the wait unwinds) instead of leaving the place
        taken until a worker frees up or the queue's deadline passes."""
        if self.cancelled:
            choosing.close()
            return None
        task = self.routing = asyncio.current_task()
        try:
            return await choosing
        except asyncio.CancelledError:
            if not (self.cancelled or self.shut) or task is None or task.uncancel() > 0:
                raise  # cancelled from elsewhere too (the task's owner): not ours to swallow
            if self.shut and not self.cancelled:
                raise errors.shutting_down() from None
            return None
        finally:
            self.routing = None

    def attach(self, stream: WorkerStream) -> WorkerStream:
        """Make `stream` the one cancel() reaches; a cancel that came first applies at once."""
        self.stream = stream
        if self.prefill_started is None:
            self.prefill_started = time.monotonic()
        if self.cancelled:
            stream.cancel()
        return stream

    def shut_down(self) -> None:
        """The frontend is exiting past its grace: end the request as `shutting_down`, wherever it is."""
        self.shut = True
        self._interrupt()

    def _interrupt(self) -> None:
        """Stop the worker stream, or the wait for a routing decision, the request is in now."""
        if self.stream is not None:
            self.stream.cancel()  # the client left or the frontend is exiting: a cancellation to the worker
        if self.routing is not None:
            self.routing.cancel()
            self.routing = None

    def stop_worker(self) -> None:
        """We have what we need (a stop string matched): let the worker stop generating, which it does not count
        as a cancellation (the request-plane's graceful stop)."""
        if self.stream is not None:
            self.stream.stop()

"""Which requests the frontend lets in, and how many it is serving: the one owner of its drain state,
its in-flight count (which a drain waits on), the concurrency limit (the config's
`rejection_frontend_request_concurrency_limit`, counting requests held for a worker too) and the model
entry a request goes to, once some worker serves it (`--wait-for-workers-secs` holds it until then:
`worker_wait.py`), and, under `--router-min-initial-workers`, whether the frontend has seen its initial
workers yet (`InitialWorkers`).

Each refusal is the HTTP error `errors.py` writes for it; one for want of capacity (`no_workers`,
`overloaded`) also counts in `dynamo_frontend_model_rejection_total` under its code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from dynamo.frontend import errors
from dynamo.frontend.errors import OVERLOADED_STATUS, ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.worker_wait import WorkerWait

log = logging.getLogger("dynamo.frontend")

# What a request refused while the frontend waits for its initial workers is told to wait before retrying: an
# engine that loads for minutes comes no sooner for clients asking every few milliseconds.
STARTING_RETRY_AFTER_SECS = 5
# How long a request waits for the first worker of a model discovery is about to serve (a LoRA adapter whose load
# returned 200 a moment before this frontend's discovery watch saw it), rather than a 503 or 404 at once.
FIRST_WORKER_GRACE_SECS = 1.0
MIN_LOOK_GAP_SECS = 0.1  # between the starts of two such looks at discovery


class InitialWorkers:
    """`--router-min-initial-workers N`: the frontend serves once N workers have been up at the same time
    (a deployment's engines all loaded, so the first requests are not all routed to the first one to load).
    Until then /health says so and generation requests get 503 `no_workers` with a Retry-After (with
    --wait-for-workers-secs they wait for it instead, as for any worker); once met, it
    stays met (workers that leave later are a scale-down or a restart, not a start-up)."""

    def __init__(self, want: int, count: Callable[[], int]) -> None:
        self.want = want
        self.count = count  # workers up now
        self.met = want <= 0

    def check(self) -> bool:
        if not self.met and self.count() >= self.want:
            self.met = True
            log.info("%d initial worker(s) up: serving", self.want)
        return self.met

    def waiting_message(self) -> str:
        return (f"waiting for {self.want} initial worker(s) (--router-min-initial-workers); "
                f"{self.count()} up so far")

    def refusal(self) -> ApiError:
        error = errors.workers_unavailable(f"The frontend is {self.waiting_message()}; retry later")
        error.retry_after = STARTING_RETRY_AFTER_SECS
        return error


class Admission:
    def __init__(self, models: ModelManager, metrics: FrontendMetrics, concurrency_limit: int = 0,
                 overload_status: int = OVERLOADED_STATUS, wait_for_workers: float = 0.0) -> None:
        self.models = models
        self.metrics = metrics
        self.concurrency_limit = concurrency_limit
        self.overload_status = overload_status
        self.worker_wait = WorkerWait(models, metrics, wait_for_workers)
        self.initial = InitialWorkers(0, lambda: 0)  # met: `await_initial_workers` sets a count to wait for
        self.inflight = 0
        self.draining = False
        self.unknown = UnknownNames(models)  # looks at discovery for names this frontend does not know yet
        self._drain = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- drain ---------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """From now on /health says 503 and new generation requests get 503; admitted ones run on."""
        self.draining = True
        self._drain.set()
        self.close()

    async def drained(self, timeout: float, unless: asyncio.Event | None = None) -> bool:
        """Wait (bounded) until no generation request is in flight; where `unless` is given, stop waiting
        as soon as it is set. Whether none is in flight. A request admitted between the last one ending and
        this waiter resuming (a handed-off keep-alive connection delivers one more) is waited for too: the
        idle moment it cut short was no drain."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            waits = [asyncio.ensure_future(self._idle.wait())]
            if unless is not None:
                waits.append(asyncio.ensure_future(unless.wait()))
            try:
                await asyncio.wait(waits, timeout=max(0.0, end - loop.time()), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if self._idle.is_set() or (unless is not None and unless.is_set()) or loop.time() >= end:
                return self._idle.is_set()

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise errors.shutting_down()

    # -- start-up --------------------------------------------------------------------------------
    def await_initial_workers(self, want: int) -> InitialWorkers:
        """Serve generation requests only once `want` workers are up (`--router-min-initial-workers`)."""
        self.initial = InitialWorkers(want, lambda: workers_up(self.models))
        return self.initial

    async def until_started(self, name: str, receive: Callable) -> None:
        """Past the initial-workers gate: at once, or, with --wait-for-workers-secs, once the gate opens within
        that wait (a frontend told to hold requests for workers holds them for its initial ones too). A refusal
        is not counted as a rejection: its model label would be whatever name a client sent, known or not."""
        if self.initial.check():
            return
        if not self.worker_wait.enabled:
            raise self.initial.refusal()
        self.refuse_if_overloaded(name)
        if not await self.worker_wait.until(self.initial.check, receive, lambda: self.draining):
            self.refuse_if_draining()
            raise self.initial.refusal()

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
        model's workers are all gone and --wait-for-workers-secs holds its requests. Before the initial
        workers (--router-min-initial-workers) are up: a 503 at once, or, where --wait-for-workers-secs
        holds requests, after waiting (as long) for them."""
        await self.until_started(name, receive)
        if self.worker_wait.would_wait(name):
            self.refuse_if_overloaded(name)
            if not await self.worker_wait.until_served(name, receive, lambda: self.draining):
                self.refuse_if_draining()
                raise self.rejected(name, errors.no_workers(name, self.worker_wait.wait_secs))
        if not self.models.has_workers(name):
            await self._first_worker_grace(name, receive)
        return self.entry_for(name)

    async def _first_worker_grace(self, name: str, receive: Callable) -> None:
        """A model discovery is about to serve: a worker whose card is registered but not yet routable (a LoRA
        adapter whose load has just returned 200 while this frontend still holds its `lora_loading` card, an
        instance record not seen yet), or a name this frontend does not know yet that discovery may already
        hold (a load that finished between two looks at discovery). Its request waits up to
        FIRST_WORKER_GRACE_SECS for that worker instead of a 503 (or 404) at once; a model whose workers are
        all gone is not waited for here (--wait-for-workers-secs does that)."""
        entry = self.models.get(name)
        if entry is not None:
            if any(w.address is None for w in entry.workers.values()):
                await self._hold(name, receive, lambda: self.models.wait_for(
                    lambda: self.models.has_workers(name) or self.draining, FIRST_WORKER_GRACE_SECS))
            return
        if name in self.models.retired or self.unknown.answered(name):
            return  # looked for within the grace: a misspelt model asked for again is a 404 at once
        await self._hold(name, receive, lambda: self.unknown.look_for(name))

    async def _hold(self, name: str, receive: Callable, waited: Callable[[], Awaitable]) -> None:
        """Hold a request in the grace as one waiting for a worker: refused when over the concurrency limit,
        counted meanwhile (`worker_wait.waiting`), ended by a drain (503) or the client leaving."""
        if self.models.get(name) is not None:
            self.refuse_if_overloaded(name)
        elif self.concurrency_limit and self.inflight + self.worker_wait.waiting >= self.concurrency_limit:
            raise errors.too_many_requests(self.overload_status)  # uncounted: the label would be any name sent
        self.worker_wait.waiting += 1
        tasks = [asyncio.ensure_future(waited()), asyncio.ensure_future(self._drain.wait()),
                 asyncio.ensure_future(receive())]  # the body is read: the next message is a disconnect
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.refuse_if_draining()
            if not tasks[0].done():
                if tasks[2].done() and not tasks[2].cancelled():
                    tasks[2].exception()  # retrieved: a failed receive means the client is gone too
                self.metrics.disconnects.inc()
                raise ConnectionError("client disconnected while waiting for a worker")
        finally:
            for task in tasks:
                task.cancel()
            self.worker_wait.waiting -= 1

    def close(self) -> None:
        """Stop the shared look at discovery (a drain or shutdown): nobody is left to answer from it."""
        self.unknown.close()


def workers_up(models: ModelManager) -> int:
    """Distinct worker instances serving some model end to end: a worker with a LoRA adapter lists two model
    entries, one instance."""
    return len({(str(w.endpoint), w.instance_id) for entry in models.models.values() for w in entry.decode_workers()})


class UnknownNames:
    """Looks at discovery for model names this frontend does not know yet. A name is answered by a look begun
    after it was asked for (one that began before may have read discovery before its worker registered); the
    requests that arrive meanwhile share the next look, so at most one runs at a time, and looks start at most
    every MIN_LOOK_GAP_SECS (random names cannot keep discovery busy). A name answered within
    FIRST_WORKER_GRACE_SECS is answered at once: a misspelt model asked for again costs no look. So a client that
    loads an adapter after its name's 404 and asks again within that second gets the 404 again unless this
    frontend's discovery watch (milliseconds, normally) has seen the adapter by then."""

    MAX_REMEMBERED = 4096  # names answered recently, kept for the grace: a flood of random names is bounded

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        self._look: asyncio.Task | None = None  # the look under way (shared, owned)
        self._look_began = -MIN_LOOK_GAP_SECS
        self._answered: dict[str, float] = {}  # name -> when a look for it ended (loop time)

    def answered(self, name: str) -> bool:
        at = self._answered.get(name)
        return at is not None and asyncio.get_running_loop().time() - at < FIRST_WORKER_GRACE_SECS

    async def look_for(self, name: str) -> None:
        """Until a look begun after now has ended, or the name is known; bounded by the grace as a whole."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            await asyncio.wait_for(self._looked_after(name, asked), FIRST_WORKER_GRACE_SECS)
        except asyncio.TimeoutError:
            pass  # discovery slow or unreachable: answer from what this frontend knows
        self._remember(name, loop.time())

    async def _looked_after(self, name: str, asked: float) -> None:
        loop = asyncio.get_running_loop()
        while self.models.get(name) is None:
            if self._look is None or self._look.done():
                gap = self._look_began + MIN_LOOK_GAP_SECS - loop.time()
                if gap > 0:  # random names sent one after another read discovery at most this often
                    await asyncio.sleep(gap)
                    continue
                self._look_began = loop.time()
                self._look = asyncio.ensure_future(self._look_at_discovery())
            began, look = self._look_began, self._look
            await asyncio.shield(look)
            if began >= asked:
                return

    async def _look_at_discovery(self) -> None:
        """Two reads of the whole namespace, bounded as a whole (a store that does not answer, an outage)."""
        try:
            await asyncio.wait_for(self.models.caught_up(FIRST_WORKER_GRACE_SECS), FIRST_WORKER_GRACE_SECS)
        except Exception as exc:
            log.debug("looking at discovery for models not known yet failed: %r", exc)

    def _remember(self, name: str, at: float) -> None:
        if len(self._answered) >= self.MAX_REMEMBERED:
            self._answered = {n: t for n, t in self._answered.items() if at - t < FIRST_WORKER_GRACE_SECS}
            if len(self._answered) >= self.MAX_REMEMBERED:
                self._answered.clear()
        self._answered[name] = at

    def close(self) -> None:
        """Stop the look under way (a drain or shutdown): nobody is left to answer from it."""
        if self._look is not None:
            self._look.cancel()

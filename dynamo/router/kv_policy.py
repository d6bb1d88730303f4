"""The `kv` routing policy: KV-cache-aware routing over worker pools, hosted alike by the
frontend (`--router-mode kv`) and the `dynamo.router` service.

One `KvRouter` per pool (a model's decode pool, its prefill pool), kept in step with the
pool snapshots it is given, fed by the workers' KV events and load metrics
(`dynamo.router.subscriber`), optionally sharing bookings with router replicas
(`dynamo.router.replica_sync`). Load is booked at `select`, its prefill released at the
first token, everything released at `free`.

The mode in effect (`dynamo.router.mode_report`) is stated, never silently degraded: when
no worker of a pool publishes KV events, or none of them is heard on this process's event
plane, its router runs in approximate mode and says so in a WARNING, in `/health` and in the
router-mode metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.active_sequences import LoadLedger
from dynamo.router.config import KvMode, KvRouterConfig
from dynamo.router.kv_router import AllWorkersBusy, KvRouter, NoWorkers, PrefixMatch, Selection
from dynamo.router.metrics import RouterMetrics
from dynamo.router.mode_report import ModeReport, mode_report
from dynamo.router.policy import Choice, PolicyHost, Role, WorkerPool, register
from dynamo.router.pool_route import PoolRoute
from dynamo.router.replica_sync import ReplicaSync
from dynamo.router.router_queue import RouterQueue
from dynamo.router.policy_profile import PolicyProfile
from dynamo.router.request_hints import cache_salt_of, expected_output
from dynamo.router.selector import BusyThresholds
from dynamo.router.subscriber import KvEventFeeds
from dynamo.runtime.records import EndpointId

log = logging.getLogger(__name__)


class _QueueReplaced(Exception):
    """The queue a request waits in is no longer its pool's."""


@register("kv")
class KvPolicy:
    name = "kv"

    def __init__(self, config: KvRouterConfig) -> None:
        self.config = config
        self.policy_document = config.policy_document()  # --router-policy-config, read at start
        self.routes: dict[str, PoolRoute] = {}
        # Workers' loads, one ledger for every route: an engine serving a base model and its LoRA adapters is
        # in each of their pools, and each pool's router must count what the others booked there.
        self.ledger = LoadLedger()
        self._inflight: dict[str, PoolRoute] = {}
        self._synced: dict[str, EndpointId] = {}  # request -> the endpoint its booking was shared on (replica sync)
        self.feeds: KvEventFeeds | None = None
        self.sync: ReplicaSync | None = None
        self.metrics: RouterMetrics | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thresholds: dict[str, BusyThresholds] = {}  # per model, set at runtime (POST /busy_threshold)
        self._profile_models: dict[str, str] = {}  # pool name -> the model it serves, where pool.model is not one

    # -- lifecycle -----------------------------------------------------------------------
    async def attach(self, host: PolicyHost) -> None:
        self.feeds = KvEventFeeds(host.store, host.client, host.event_plane)
        self.feeds.on_link_change = self._on_event_plane_change
        if self.config.router_replica_sync:
            self.sync = ReplicaSync(host.store, host.event_plane, uuid.uuid4().hex, host.instance_id, self._router_for)
        self.metrics = RouterMetrics.attach(host.registry, host.metrics_prefix, self._rows,
                                            lambda: dict(self.feeds.counts) if self.feeds else {}, host.instance_id)

    def _router_for(self, name: str) -> KvRouter | None:
        route = self.routes.get(name)
        return route.router if route is not None else None

    async def close(self) -> None:
        for route in self.routes.values():
            route.queue.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.feeds is not None:
            await self.feeds.close()
        if self.sync is not None:
            await self.sync.close()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("KV routing background task failed: %s", task.exception())

    # -- membership ----------------------------------------------------------------------
    def on_membership_change(self, pool: WorkerPool) -> None:
        route = self.routes.get(pool.name)
        if route is not None and route.router.block_size != pool.block_size:
            self._rebuild(route, pool)  # hashes of another block size match nothing: start over
        if route is None:
            if not pool.workers and (pool.role is Role.PREFILL or pool.lora_name is not None):
                return  # an aggregated model's prefill pool, an adapter still loading: nothing to route or report
            model = self._model_of(pool)
            route = self.routes[pool.name] = PoolRoute(pool, self._new_router(pool), self._profile(model), model)
            self._say_profile(route)
        before = {w.instance_id for w in route.pool.workers}
        current = {w.instance_id: w for w in pool.workers}
        self._remove_workers(route, before - current.keys())
        for iid, worker in current.items():
            if iid not in before:
                rc = worker.card.runtime_config if worker.card else None
                route.router.add_worker(iid, max(rc.data_parallel_size, 1) if rc else 1,
                                        (rc.total_kv_blocks or None) if rc else None,
                                        rc.max_num_batched_tokens if rc else None)
        route.pool = pool
        if self.metrics is not None:
            for endpoint in {w.endpoint for w in pool.workers}:
                self.metrics.series.endpoint_series(endpoint)
        self._update_mode(route)
        self._subscribe(route)
        route.queue.wake()
        if not pool.workers and pool.lora_name is not None:  # an adapter unloaded: or each one ever loaded
            self.retire(pool.name)  # would keep a router, a queue, metric rows (its waiters find no worker)

    def _remove_workers(self, route: PoolRoute, gone: set[int]) -> None:
        for iid in gone:
            running = route.router.remove_worker(iid)
            if self.feeds is not None:
                self.feeds.untrack(iid, route.router)
            log.info("%s: worker %x left the KV router (%d requests still running there stay booked until they end)",
                     route.name, iid, len(running))

    def use_profile_of(self, pool: WorkerPool, model: str | None) -> None:
        """Route `pool` with `model`'s --router-policy-config profile and busy thresholds (None: its own
        `pool.model`'s). For a host whose pools are not named by model: the router service's is its endpoint
        path. A route already made takes them for the requests that arrive from now on."""
        if model is None:
            self._profile_models.pop(pool.name, None)
        else:
            self._profile_models[pool.name] = model
        route = self.routes.get(pool.name)
        if route is not None and route.profile_model != self._model_of(pool):
            self._reprofile(route, pool)

    def _model_of(self, pool: WorkerPool) -> str:
        return self._profile_models.get(pool.name, pool.model)

    def _reprofile(self, route: PoolRoute, pool: WorkerPool) -> None:
        """The route's queue and thresholds become its model's. Requests waiting in the old queue move to the
        new one as they are woken, one after another (`select`)."""
        route.profile_model = model = self._model_of(pool)
        old, route.queue = route.queue, RouterQueue(route.router.config, self._profile(model))
        old.wake()  # its waiters try now rather than at the next recheck
        self._tune(route.router, model)
        self._say_profile(route)

    def _say_profile(self, route: PoolRoute) -> None:
        if route.queue.profile.source != "flags":
            log.info("%s: router queue classes of --router-policy-config's %s profile: %s", route.name,
                     route.queue.profile.source, ", ".join(c.name for c in route.queue.profile.classes))

    def retire(self, name: str) -> None:
        """Forget the route of pool `name` (a router service whose workers' role changed routes them under
        another name): its workers leave it; requests booked there are still freed; requests waiting in its
        queue find no worker at their next try (NoWorkers), so their host retries with its current pool."""
        route = self.routes.pop(name, None)
        self._profile_models.pop(name, None)
        if route is not None:
            self._remove_workers(route, {w.instance_id for w in route.pool.workers})
            route.pool = dataclasses.replace(route.pool, workers=())
            route.queue.wake()

    def _profile(self, model: str) -> PolicyProfile:
        """The model's router-queue classes: its --router-policy-config profile, else the flags' one class."""
        c, document = self.config, self.policy_document
        flags = (c.router_queue_threshold, c.router_queue_policy)
        return document.profile_for(model, *flags) if document else PolicyProfile.synthetic(*flags)

    def _new_router(self, pool: WorkerPool) -> KvRouter:
        """A KvRouter for the pool, with its default queue class's thresholds and the busy thresholds set at
        runtime for its model."""
        router = KvRouter(pool.block_size, self.config, ledger=self.ledger)
        self._tune(router, self._model_of(pool))
        return router

    def _tune(self, router: KvRouter, model: str) -> None:
        default = self._profile(model).default_class
        router.set_queue_class(default.prefill_busy_threshold, default.prefill_busy_threshold_frac)
        if model in self._thresholds:
            router.set_busy_thresholds(self._thresholds[model])

    def _rebuild(self, route: PoolRoute, pool: WorkerPool) -> None:
        """A new KvRouter for the pool's new block size (a standalone router that took its block size
        from the first model card): the old one's workers leave it, the new one gets them all."""
        log.info("%s: KV block size %d -> %d: routing state rebuilt", pool.name, route.router.block_size,
                 pool.block_size)
        self._remove_workers(route, {w.instance_id for w in route.pool.workers})
        for rid in [rid for rid, r in self._inflight.items() if r is route]:
            route.router.free(rid)  # booked in the old router's blocks: out of the shared ledger, not in the new one
            self._share(route, rid, "free")  # and out of the replicas' (the request's own end frees nothing now)
            del self._inflight[rid]
            self._synced.pop(rid, None)
        route.router = self._new_router(pool)
        route.pool = dataclasses.replace(pool, workers=(), version=-1)

    def _subscribe(self, route: PoolRoute) -> None:
        for worker in route.pool.workers:
            eid = worker.endpoint
            if self.feeds is not None and route.report.mode != KvMode.LOAD_ONLY:
                resync = bool(worker.card.runtime_config.enable_local_indexer) if worker.card else True
                self._spawn(self.feeds.track(eid.namespace, eid.component, worker.instance_id, route.router,
                                             worker.address, resync, route.still_paired(worker.instance_id)))
            if self.sync is not None:
                self._spawn(self.sync.join(eid.namespace, eid.component))

    def _on_event_plane_change(self) -> None:
        for route in self.routes.values():
            self._update_mode(route)

    def _update_mode(self, route: PoolRoute) -> None:
        if not route.pool.workers and self.config.mode == KvMode.KV_EVENTS:
            return  # keep what we had until workers come back
        feeds = self.feeds
        down = feeds is not None and bool(feeds.links_down)
        report = mode_report(self.config.mode, route.pool.workers, down, feeds.silent if feeds else (),
                             feeds.plane if feeds else "the event plane")
        router = route.router
        use_events = report.mode == KvMode.KV_EVENTS
        if self.config.mode == KvMode.KV_EVENTS and router.config.use_kv_events != use_events:
            router.config = dataclasses.replace(router.config, use_kv_events=use_events)
        if (report.mode, report.reason) != (route.report.mode, route.report.reason):
            log.log(logging.WARNING if report.degraded else logging.INFO, "%s: KV routing mode %s (%s)",
                    route.name, report.mode, report.reason)
        route.report = report

    def _route(self, pool: WorkerPool) -> PoolRoute | None:
        route = self.routes.get(pool.name)
        if route is None or route.pool.version != pool.version:
            self.on_membership_change(pool)
            route = self.routes.get(pool.name)
        return route

    # -- per request ---------------------------------------------------------------------
    async def select(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        while True:
            route = self._route(pool)
            if route is None:
                raise NoWorkers(pool.model)
            try:
                return await self._select_in(route, route.queue, request, exclude)
            except _QueueReplaced:
                continue  # its model's profile replaced the pool's queue while it waited: it waits in the new one

    async def _select_in(self, route: PoolRoute, queue: RouterQueue, request: PreprocessedRequest,
                         exclude: set[int]) -> Choice:
        profile, klass, new_tokens, match = queue.profile, None, None, None
        if profile.thresholds_vary or profile.needs_uncached:  # the queue reads the lookup the selection uses
            match = route.router.match_prefix(request.token_ids, request.request_id, route.lora(request),
                                              cache_salt_of(request), request.media_salt)
        if profile.thresholds_vary:  # its class decides where it may go: classified at arrival
            new_tokens = route.new_tokens(request, exclude, match)
            klass = profile.class_index(None, new_tokens)
        ticket = None
        try:
            while True:
                try:  # the class's thresholds over the model's as they are now (POST /busy_threshold moves them)
                    limits = None if klass is None else \
                        queue.class_thresholds(klass, route.router.busy_thresholds)
                    choice = self._select_now(route, request, exclude, limits, match)
                    if ticket is not None:
                        queue.leave(ticket, served=True)
                    return choice
                except AllWorkersBusy:
                    if ticket is None:
                        ticket = route.enter_queue(queue, request, exclude, klass, new_tokens, match)
                    else:  # its class cannot place it now: the next class's head tries
                        queue.passed_over(ticket)
                    await queue.wait(ticket)  # AllWorkersBusy past the deadline
                    if route.queue is not queue:
                        raise _QueueReplaced from None
                    match = None  # caches and membership moved on while it waited: the next try looks again
        finally:
            if ticket is not None:  # served, timed out or cancelled: the next waiter's turn (no load was released)
                queue.leave(ticket)
                queue.wake_next()

    async def query(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        route, selection = self._peek(pool, request, exclude)
        return Choice(route.worker(selection), selection.dp_rank, selection.overlap_blocks)

    def _peek(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> tuple[PoolRoute, Selection]:
        """The router's choice for the request now, booked nowhere and never queued for; raises
        NoWorkers / AllWorkersBusy."""
        route = self._route(pool)
        if route is None:
            raise NoWorkers(pool.model)
        allowed = route.allowed(request, exclude)
        return route, route.router.select(request.token_ids, allowed=allowed, lora_name=route.lora(request),
                                          cache_salt=cache_salt_of(request), media=request.media_salt)

    def _select_now(self, route: PoolRoute, request: PreprocessedRequest, exclude: set[int],
                    limits: BusyThresholds | None = None, match: PrefixMatch | None = None) -> Choice:
        allowed = route.allowed(request, exclude)
        started = time.perf_counter() if match is None else match.started
        router = route.router
        rid = request.request_id
        lora, salt = route.lora(request), cache_salt_of(request)
        media = request.media_salt
        selection = router.select(request.token_ids, request_id=rid, allowed=allowed, lora_name=lora, cache_salt=salt,
                                  media=media, thresholds=limits, match=match)
        if rid in self._inflight:  # a retry that was not freed: never double-book
            self.free(rid)
        seq = router.add_request(rid, selection, request.token_ids, lora, expected_output(request), salt, media)
        self._inflight[rid] = route
        worker = route.worker(selection)
        if self.feeds is not None and worker.publishes_kv_events:
            self.feeds.note_routed(selection.worker_id)  # it should be heard on the event plane from now on
        if self.metrics is not None:
            self.metrics.booked(route.pool, worker.endpoint, request, selection, started)
        if self.sync is not None:
            eid = self._synced[rid] = worker.endpoint
            self.sync.publish(eid.namespace, eid.component, self.sync.event(
                route.name, rid, "add", worker_id=selection.worker_id, dp_rank=selection.dp_rank, seq_hashes=seq,
                isl=len(request.token_ids), overlap_blocks=selection.overlap_blocks,
                expected_output_tokens=expected_output(request) or 0))
        return Choice(worker, selection.dp_rank, selection.overlap_blocks)

    def cached_tokens(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> int:
        try:
            route, selection = self._peek(pool, request, exclude)
        except (NoWorkers, AllWorkersBusy):
            return 0
        return min(selection.overlap_blocks * route.router.block_size, len(request.token_ids))

    def busy(self, pool: WorkerPool, instance_id: int) -> bool:
        route = self.routes.get(pool.name)
        return route is not None and route.router.worker_busy(instance_id)

    def bound_worker(self, pool: WorkerPool, session_id: str) -> int | None:
        return None  # binds no sessions (session_affinity.py does, around any policy)

    def busy_thresholds(self, model: str) -> BusyThresholds:
        thresholds = self._thresholds.get(model)
        return BusyThresholds.of(self.config) if thresholds is None else thresholds

    def set_busy_thresholds(self, model: str, update: BusyThresholds) -> BusyThresholds:
        """Every pool of the model (decode and prefill) takes the thresholds `update` sets, now and when
        it is next (re)created; requests queued for a busy worker retry at once against them."""
        thresholds = self._thresholds[model] = self.busy_thresholds(model).updated(update)
        for route in self.routes.values():
            if route.profile_model == model:
                route.router.set_busy_thresholds(thresholds)
                route.queue.wake()
        return thresholds

    def prefill_complete(self, request_id: str) -> None:
        if self.metrics is not None:
            self.metrics.series.first_token(request_id)
        route = self._inflight.get(request_id)
        if route is None:
            return
        worker = route.router.active.worker_of(request_id)
        if route.router.mark_prefill_complete(request_id):
            self._share(route, request_id, "prefill")
            self._wake_queues(route, worker)

    def output(self, request_id: str) -> None:
        route = self._inflight.get(request_id)
        if route is not None:
            route.router.output(request_id)

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        if self.metrics is not None:
            self.metrics.series.finished(request_id, output_tokens)
        route = self._inflight.pop(request_id, None)
        if route is not None:
            worker = route.router.active.worker_of(request_id)
            if route.router.free(request_id):
                self._share(route, request_id, "free")
                self._wake_queues(route, worker)
        self._synced.pop(request_id, None)

    def _wake_queues(self, route: PoolRoute, worker: tuple[int, int] | None) -> None:
        """Load was released on `worker`: the queues of the route and of every other pool holding it retry."""
        route.queue.wake()
        if worker is None:
            return
        for other in self.routes.values():
            if other is not route and other.pool.get(worker[0]) is not None:
                other.queue.wake()

    def _share(self, route: PoolRoute, request_id: str, kind: str) -> None:
        # To the endpoint the request was booked on: its pool may be empty now (its worker left, its
        # booking kept until this free), and the peers kept their copies too.
        eid = self._synced.get(request_id)
        if self.sync is not None and eid is not None:
            self.sync.publish(eid.namespace, eid.component, self.sync.event(route.name, request_id, kind))

    # -- observability -------------------------------------------------------------------
    def _rows(self):
        """Per route: its model (a prefill pool's too: its role is the worker_type label) and its state."""
        return [(route.pool.model, route.router, route.report.mode, route.queue.pending, route.pool.role.value)
                for route in self.routes.values()]

    def report(self, name: str) -> ModeReport | None:
        route = self.routes.get(name)
        return None if route is None else route.report

    def health(self) -> dict:
        models = {}
        for name, route in self.routes.items():
            models[name] = route.health()
        queue = {"policy": self._profile("").default_class.queue_policy}  # models without a profile of their own
        for name in ("pending", "queued_total", "timed_out", "rejected_full", "rejected_class_limit"):
            queue[name] = sum(m["queue"][name] for m in models.values())
        body = {"router_mode": "kv", "replica_sync": self.sync is not None, "models": models, "queue": queue}
        if self.sync is not None:
            body["replica_events_applied"] = self.sync.applied
            body["replica_peers_alive"] = self.sync.peers_alive
        return {"router": body}

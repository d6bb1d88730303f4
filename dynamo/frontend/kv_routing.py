"""`--router-mode kv` in the frontend: the frontend's face of the KV router.

One `KvRouter` per served model, kept in step with the model's workers by the
ModelManager (`on_model_change`), fed by the workers' KV events and load metrics
(`dynamo.router.subscriber`), optionally sharing bookings with other frontends
(`dynamo.router.replica_sync`). Load is booked when a request is dispatched, its prefill
released at the first token, everything released when it ends.

The mode in effect is stated, never silently degraded: when no worker of a model
publishes KV events, that model's router runs in approximate mode and says so in a
WARNING, in `/health` (`router.models[name]`) and in `dynamo_frontend_router_mode`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.dispatch import no_workers
from dynamo.frontend.model_manager import ModelEntry, WorkerInfo
from dynamo.frontend.openai import ApiError
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints
from dynamo.router.kv_router import AllWorkersBusy, KvRouter, NoWorkers
from dynamo.router.metrics import RouterMetrics
from dynamo.router.replica_sync import ReplicaSync
from dynamo.router.subscriber import KvEventFeeds, apply_mode, effective_mode

log = logging.getLogger(__name__)

_MODE_NAMES = {"events": "kv-events", "approximate": "approximate", "load-only": "load-only"}


class ModelRoute:
    """The router of one model and the workers it currently knows."""

    def __init__(self, name: str, router: KvRouter) -> None:
        self.name = name
        self.router = router
        self.version = -1
        self.workers: dict[int, WorkerInfo] = {}
        self.mode = _MODE_NAMES[router.mode]
        self.reason = "configured"


def busy_error() -> ApiError:
    return ApiError(503, "Service temporarily unavailable: all workers are busy, please retry later",
                    "service_unavailable", None, "all_workers_busy")


class KvRoutingPolicy:
    def __init__(self, config: FrontendConfig) -> None:
        self.config = config
        self.routes: dict[str, ModelRoute] = {}
        self._inflight: dict[str, ModelRoute] = {}
        self.feeds: KvEventFeeds | None = None
        self.sync: ReplicaSync | None = None
        self.metrics: RouterMetrics | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def attach(self, runtime, models, metrics) -> None:
        self.feeds = KvEventFeeds(runtime.store, runtime.client, self.config.event_plane)
        self.feeds.on_link_change = self._on_event_plane_change
        if self.config.router_replica_sync:
            self.sync = ReplicaSync.shared(runtime.store, self.config.event_plane, runtime.instance_id,
                                           self._router_for)
        self.metrics = RouterMetrics.attach(metrics.registry, self.config.metrics_prefix, self._rows,
                                     lambda: dict(self.feeds.counts) if self.feeds else {})
        for entry in list(models.models.values()):
            self.on_model_change(entry)

    def _router_for(self, model: str) -> KvRouter | None:
        route = self.routes.get(model)
        return route.router if route is not None else None

    async def close(self) -> None:
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
    def on_model_change(self, entry: ModelEntry) -> None:
        route = self.routes.get(entry.name)
        if route is None:
            block_size = self.config.kv_cache_block_size or entry.card.kv_cache_block_size
            route = self.routes[entry.name] = ModelRoute(entry.name, KvRouter(block_size, self.config))
        route.version = entry.version
        current = {w.instance_id: w for w in entry.decode_workers()}
        for iid in [i for i in route.workers if i not in current]:
            route.workers.pop(iid)
            dropped = route.router.remove_worker(iid)
            for rid in dropped:
                self._inflight.pop(rid, None)
            if self.feeds is not None:
                self.feeds.untrack(iid)
            log.info("model %r: worker %x left the KV router (%d in-flight bookings dropped)", entry.name, iid,
                     len(dropped))
        for iid, worker in current.items():
            if iid not in route.workers:
                rc = worker.card.runtime_config
                route.router.add_worker(iid, max(rc.data_parallel_size, 1), rc.total_kv_blocks or None,
                                        rc.max_num_batched_tokens)
            route.workers[iid] = worker
        self._update_mode(route)
        self._subscribe(route, current)

    def _subscribe(self, route: ModelRoute, workers: dict[int, WorkerInfo]) -> None:
        for iid, worker in workers.items():
            eid = worker.endpoint
            if self.feeds is not None and route.mode != "load-only":
                resync = bool(worker.card.runtime_config.enable_local_indexer)
                self._spawn(self.feeds.track(eid.namespace, eid.component, iid, route.router, worker.address, resync))
            if self.sync is not None:
                self._spawn(self.sync.join(eid.namespace, eid.component))

    def _on_event_plane_change(self) -> None:
        for route in self.routes.values():
            self._update_mode(route)

    def _update_mode(self, route: ModelRoute) -> None:
        if not route.workers and self.config.mode == "events":
            return  # keep what we had until workers come back
        publishing = sum(1 for w in route.workers.values() if w.card.runtime_config.publishes_kv_events)
        mode, reason = effective_mode(self.config.mode, publishing, len(route.workers))
        if mode == "kv-events" and self.feeds is not None and self.feeds.links_down:
            mode, reason = "approximate", "event plane unreachable: caches predicted from routing decisions"
        if self.config.mode == "events":
            apply_mode(route.router, mode)
        if (mode, reason) != (route.mode, route.reason):
            degraded = mode != _MODE_NAMES[self.config.mode] or reason.startswith("only")
            log.log(logging.WARNING if degraded else logging.INFO, "model %r: KV routing mode %s (%s)",
                    route.name, mode, reason)
        route.mode, route.reason = mode, reason

    # -- the Router protocol ---------------------------------------------------------------
    def select(self, entry: ModelEntry, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        route = self.routes.get(entry.name)
        if route is None or route.version != entry.version:
            self.on_model_change(entry)
            route = self.routes[entry.name]
        allowed = [iid for iid in route.workers if iid not in exclude]
        pinned = request.routing.backend_instance_id if request.routing else None
        if pinned is not None:
            allowed = [iid for iid in allowed if iid == pinned]
        if not allowed:
            raise no_workers(entry)
        started = time.perf_counter()
        router = route.router
        rid = request.request_id
        try:
            selection = router.select(request.token_ids, request_id=rid, allowed=allowed)
        except AllWorkersBusy:
            raise busy_error() from None
        except NoWorkers:
            raise no_workers(entry) from None
        if rid in self._inflight:  # a retry that was not freed: never double-book
            self.free(rid)
        seq = router.add_request(rid, selection, request.token_ids)
        self._inflight[rid] = route
        if self.metrics is not None:
            self.metrics.decision.labels(route.name).observe(time.perf_counter() - started)
            self.metrics.overlap.labels(route.name).observe(selection.overlap_blocks)
        if selection.dp_rank:
            hints = request.routing or RoutingHints()
            hints.dp_rank = selection.dp_rank
            request.routing = hints
        worker = route.workers[selection.worker_id]
        if self.sync is not None:
            eid = worker.endpoint
            self.sync.publish(eid.namespace, eid.component, self.sync.event(
                route.name, rid, "add", worker_id=selection.worker_id, dp_rank=selection.dp_rank, seq_hashes=seq,
                isl=len(request.token_ids), overlap_blocks=selection.overlap_blocks))
        return worker

    def first_token(self, request_id: str) -> None:
        route = self._inflight.get(request_id)
        if route is not None and route.router.mark_prefill_complete(request_id):
            self._share(route, request_id, "prefill")

    def free(self, request_id: str) -> None:
        route = self._inflight.pop(request_id, None)
        if route is not None and route.router.free(request_id):
            self._share(route, request_id, "free")

    def _share(self, route: ModelRoute, request_id: str, kind: str) -> None:
        if self.sync is None or not route.workers:
            return
        eid = next(iter(route.workers.values())).endpoint
        self.sync.publish(eid.namespace, eid.component, self.sync.event(route.name, request_id, kind))

    # -- observability -------------------------------------------------------------------
    def _rows(self):
        return [(name, route.router, route.mode) for name, route in self.routes.items()]

    def health(self) -> dict:
        models = {}
        for name, route in self.routes.items():
            stats = route.router.stats()
            models[name] = {
                "mode": route.mode, "reason": route.reason, "block_size": route.router.block_size,
                "workers": sorted(route.workers), "kv_hit_rate": round(stats["kv_hit_rate"], 4),
                "workers_needing_resync": stats["workers_needing_resync"],
                "indexed_blocks": stats["tree_sizes"],
            }
        body = {"router_mode": "kv", "replica_sync": self.sync is not None, "models": models}
        if self.sync is not None:
            body["replica_events_applied"] = self.sync.applied
        return {"router": body}

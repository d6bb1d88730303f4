"""Event plane -> KvRouter: consumes the `kv-events` and `kv_metrics` topics of worker
components and feeds the KvRouter that owns each worker; recovers lost events by asking
the worker for its full KV state.

The worker's half of re-sync (`LocalKvState`, answering `worker_kv_indexer_query` with a
`KvStateDump`) lives in `dynamo.llm.kv_events.local_state`. Here, the router's half:
`KvEventFeeds` keeps one subscription per (namespace, component) shared by every
router; when an indexer reports an event-id gap or an unknown parent (events were lost:
  at-most-once event plane, slow joiners), the worker is re-synced from its dump. A newly
  tracked worker is re-synced at once, so a router that starts late sees existing caches.
Workers that do not serve the endpoint stay flagged; the gap counts stay visible in the
`dynamo_component_kv_cache_events_applied{status="gap"}` metric.

A worker that was routed requests yet has sent nothing at all (no KV event, no load metrics:
our workers publish the latter every 0.5 s) for `SILENT_AFTER` seconds is `silent`: it
publishes on another event plane, or not at all. The feeds say so once in a WARNING and
through `on_link_change`, so the routers stop trusting an index that cannot fill; the first
message from it clears the flag and re-syncs its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Callable

import msgspec

from dynamo.llm.kv_events.local_state import KV_QUERY_ENDPOINT, KvStateDump, decode_dump
from dynamo.llm.kv_events.protocol import KV_EVENTS_TOPIC, KV_METRICS_TOPIC, KvCacheEvent, KvRemoved, \
    decode_router_events, load_metrics_decoder
from dynamo.router.config import KvMode
from dynamo.router.kv_router import KvRouter
from dynamo.runtime.event_plane.base import EventSubscriber, create_subscriber, resolve_kind
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

RESYNC_TIMEOUT = 5.0
RESYNC_MIN_INTERVAL = 0.5  # seconds between two re-syncs of one worker
SILENT_AFTER = 10.0  # seconds tracked and routed to, with nothing received, before a worker is silent
SILENCE_CHECK_INTERVAL = 2.0


class _Worker:
    """One worker's feed: every router it is routed by (a worker serving a base model and its
    LoRA adapters is in one pool per model; each pool's router indexes all its blocks, the
    adapters' hashed in their own namespaces)."""

    __slots__ = ("routers", "address", "resync", "resyncing", "last_resync", "tracked_at", "routed_at", "heard")

    def __init__(self, router: KvRouter, address: str | None, resync: bool) -> None:
        self.routers = [router]
        self.address = address
        self.resync = resync  # the worker serves worker_kv_indexer_query
        self.resyncing = False
        self.last_resync = 0.0
        self.tracked_at = time.monotonic()
        self.routed_at: float | None = None  # first request routed to it since it was tracked
        self.heard = False  # any KV event or load metrics received from it

    def silent(self, now: float) -> bool:
        """Routed to, yet nothing received from it, for SILENT_AFTER seconds."""
        return (not self.heard and self.routed_at is not None
                and now - max(self.tracked_at, self.routed_at) >= SILENT_AFTER)


class ComponentFeed:
    """The kv-events + kv_metrics subscriptions of one (namespace, component)."""

    def __init__(self, feeds: "KvEventFeeds", namespace: str, component: str) -> None:
        self.feeds = feeds
        self.namespace = namespace
        self.component = component
        self.workers: dict[int, _Worker] = {}
        self._subs: list[EventSubscriber] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        f = self.feeds
        for topic, consume in ((KV_EVENTS_TOPIC, self._consume_events), (KV_METRICS_TOPIC, self._consume_metrics)):
            sub = await create_subscriber(f.kind, f.store, self.namespace, self.component, topic)
            if topic == KV_EVENTS_TOPIC:
                sub.on_link = self._on_link
            self._subs.append(sub)
            self._tasks.append(asyncio.get_running_loop().create_task(consume(sub), name=f"kv-feed-{topic}"))
        log.info("subscribed to %s/%s KV events and load metrics over %s", self.namespace, self.component,
                 resolve_kind(f.kind, f.store.backend))

    def _on_link(self, up: bool) -> None:
        """The event plane lost (or regained) its server: events in between are gone, so on
        return every worker is re-synced from its own state instead of waiting for a gap."""
        key = (self.namespace, self.component)
        if up:
            self.feeds.links_down.discard(key)
            for worker_id in list(self.workers):
                self.schedule_resync(worker_id)
        else:
            self.feeds.links_down.add(key)
        self.feeds.link_changed()

    async def _consume_events(self, sub: EventSubscriber) -> None:
        async for _publisher, payload in sub:
            try:
                events = decode_router_events(payload)  # Dynamo's batch: a list of RouterEvents
            except Exception as exc:
                self.feeds.counts["malformed"] += 1
                log.debug("malformed KV event: %s", exc)
                continue
            for event in events:
                worker = self.workers.get(event.worker_id)
                if worker is None:
                    self.feeds.counts["unknown_worker"] += 1
                    continue
                if not worker.heard:
                    self.heard(event.worker_id, worker)
                statuses = [router.apply_event(event) for router in worker.routers]
                if "gap" in statuses or "parent_not_found" in statuses:
                    self.schedule_resync(event.worker_id)

    async def _consume_metrics(self, sub: EventSubscriber) -> None:
        async for _publisher, payload in sub:
            try:
                metrics = load_metrics_decoder.decode(payload)
            except Exception:
                continue
            worker = self.workers.get(metrics.worker_id)
            if worker is not None:
                if not worker.heard:
                    self.heard(metrics.worker_id, worker)
                for router in worker.routers:
                    router.update_metrics(metrics)

    def heard(self, worker_id: int, worker: _Worker) -> None:
        """The first message from a worker: if it was flagged silent, it no longer is."""
        worker.heard = True
        if worker_id in self.feeds.silent:
            log.info("worker %x is heard on %s after all: its KV events are indexed again", worker_id,
                     self.feeds.plane)
            self.feeds.silent.discard(worker_id)
            self.schedule_resync(worker_id)  # what it cached before is not in the index
            self.feeds.link_changed()

    def schedule_resync(self, worker_id: int) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or not worker.resync or worker.resyncing or worker.address is None:
            return
        worker.resyncing = True
        task = asyncio.get_running_loop().create_task(self._resync(worker_id, worker))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _resync(self, worker_id: int, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        try:
            wait = worker.last_resync + RESYNC_MIN_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            dump = await asyncio.wait_for(self._query(worker.address or ""), RESYNC_TIMEOUT)
            if self.workers.get(worker_id) is not worker:
                return  # left while we asked
            by_rank: dict[int, list[KvCacheEvent]] = {}
            for ev in dump.events:
                by_rank.setdefault(ev.dp_rank, []).append(ev)
            for router in worker.routers:
                ranks = set(by_rank) | {r for (w, r) in router.indexer.workers_needing_resync if w == worker_id}
                for rank in ranks or {0}:
                    events = by_rank.get(rank, [])
                    if dump.last_event_id is not None:  # carry the id so the next live event is not a gap
                        events = events or [KvCacheEvent(event_id=dump.last_event_id,
                                                         data=KvRemoved(block_hashes=[]), dp_rank=rank)]
                    router.indexer.resync_worker(worker_id, rank, events)
            self.feeds.counts["resync_ok"] += 1
            log.info("re-synced KV state of worker %x: %d blocks", worker_id, len(dump.events))
        except (StreamError, asyncio.TimeoutError, OSError, msgspec.DecodeError) as exc:
            self.feeds.counts["resync_failed"] += 1
            if isinstance(exc, StreamError) and exc.code == ErrorCode.NOT_FOUND:
                worker.resync = False
            log.warning("cannot re-sync KV state of worker %x: %s", worker_id, exc)
        finally:
            worker.resyncing = False
            worker.last_resync = loop.time()

    async def _query(self, address: str) -> KvStateDump:
        stream = await self.feeds.client.open_stream(address, KV_QUERY_ENDPOINT, b"")
        payloads: list[bytes] = []
        async for payload in stream:
            payloads.append(payload)
        if not payloads:
            raise StreamError("empty KV state dump")
        return decode_dump(payloads[0])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            await sub.close()


class KvEventFeeds:
    """All event-plane feeds of one process, shared by its routers (one per model)."""

    def __init__(self, store, client: RequestPlaneClient, kind: str | None = None) -> None:
        self.store = store
        self.client = client
        self.kind = kind
        self.counts: Counter[str] = Counter()
        self.links_down: set[tuple[str, str]] = set()  # feeds whose event plane is unreachable now
        self.silent: set[int] = set()  # workers routed to that never sent anything (see the module doc)
        self.on_link_change: Callable[[], None] | None = None
        self._feeds: dict[tuple[str, str], ComponentFeed] = {}
        self._starting: dict[tuple[str, str], asyncio.Task] = {}
        self._watch: asyncio.Task | None = None

    @property
    def plane(self) -> str:
        """The event plane this process subscribes over (zmq, nats)."""
        try:
            return resolve_kind(self.kind, self.store.backend)
        except ValueError:
            return str(self.kind)

    def link_changed(self) -> None:
        if self.on_link_change is not None:
            self.on_link_change()

    def note_routed(self, worker_id: int) -> None:
        """A request was routed to the worker: from now on it is expected to be heard."""
        for feed in self._feeds.values():
            worker = feed.workers.get(worker_id)
            if worker is not None and worker.routed_at is None:
                worker.routed_at = time.monotonic()

    async def _watch_silence(self) -> None:
        while True:
            await asyncio.sleep(SILENCE_CHECK_INTERVAL)
            self.check_silence(time.monotonic())

    def check_silence(self, now: float) -> None:
        found = [(wid, feed) for feed in self._feeds.values() for wid, w in feed.workers.items()
                 if wid not in self.silent and w.silent(now)]
        for wid, feed in found:
            self.silent.add(wid)
            log.warning("worker %x (%s/%s) was routed requests but has sent no KV events or load metrics over %s "
                        "in %.0f s: is it on another event plane (--event-plane / DYN_EVENT_PLANE must match on "
                        "the frontend and the workers) or not publishing? Its cache cannot be indexed from events", wid, feed.namespace, feed.component, self.plane, SILENT_AFTER)
        if found:
            self.link_changed()

    async def track(self, namespace: str, component: str, worker_id: int, router: KvRouter,
                    address: str | None, resync: bool = True, wanted: Callable[[], bool] | None = None) -> None:
        """Route this worker's events to `router` too; re-sync its state now when it can answer.
        `wanted`: asked once the feed is up, whether the pairing still stands (the worker may have left,
        or the router been replaced, while the feed started)."""
        feed = await self._feed(namespace, component)
        if wanted is not None and not wanted():
            return
        known = feed.workers.get(worker_id)
        if known is not None:
            known.address = address or known.address
            if any(r is router for r in known.routers):
                return
            known.routers.append(router)
        else:
            feed.workers[worker_id] = _Worker(router, address, resync)
        if resync and router.mode == KvMode.KV_EVENTS:
            feed.schedule_resync(worker_id)  # the new router sees what the worker already caches

    def untrack(self, worker_id: int, router: KvRouter | None = None) -> None:
        """Stop feeding `router` (every router when None) from this worker."""
        for feed in self._feeds.values():
            worker = feed.workers.get(worker_id)
            if worker is None:
                continue
            worker.routers = [r for r in worker.routers if router is not None and r is not router]
            if not worker.routers:
                del feed.workers[worker_id]
                self.silent.discard(worker_id)

    async def _feed(self, namespace: str, component: str) -> ComponentFeed:
        key = (namespace, component)
        feed = self._feeds.get(key)
        if feed is not None:
            return feed
        task = self._starting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start(key))
            self._starting[key] = task
        return await asyncio.shield(task)

    async def _start(self, key: tuple[str, str]) -> ComponentFeed:
        feed = ComponentFeed(self, *key)
        try:
            await feed.start()
        finally:
            self._starting.pop(key, None)
        self._feeds[key] = feed
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_silence(), name="kv-feed-silence")
        return feed

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for feed in self._feeds.values():
            await feed.close()
        self._feeds.clear()

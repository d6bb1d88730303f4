"""Router replicas sharing their bookings (`--router-replica-sync`).

Each router publishes what it books (add / prefill complete / free, with its router id)
on the event-plane topic `active_sequences_events` of the worker component it routes to,
and applies the other replicas' events to its own load view, so two frontends in front
of the same workers do not both pile onto the worker that looks idle to each alone.
Only load is shared; cache state comes to every replica from the workers' KV events.
Delivery is at-most-once: a lost `free` would leave load booked, so remote bookings
expire after `REMOTE_TTL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable, Literal

import msgspec

from dynamo.router.kv_router import KvRouter
from dynamo.runtime.event_plane.base import EventPublisher, EventSubscriber, create_publisher, create_subscriber

log = logging.getLogger(__name__)

TOPIC = "active_sequences_events"
REMOTE_TTL = 600.0


class ActiveSequenceEvent(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    router_id: str
    model: str
    request_id: str
    kind: Literal["add", "prefill", "free"]
    worker_id: int = 0
    dp_rank: int = 0
    seq_hashes: list[int] = []
    isl: int = 0
    overlap_blocks: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ActiveSequenceEvent).decode


class ReplicaSync:
    """`router_for(model)` gives the local KvRouter of a model (None: not routed here)."""

    def __init__(self, store, kind: str | None, router_id: str, instance_id: int,
                 router_for: Callable[[str], KvRouter | None]) -> None:
        self.store = store
        self.kind = kind
        self.router_id = router_id
        self.instance_id = instance_id
        self._lookups = [router_for]
        self._closed = False
        self.applied = 0
        self._pubs: dict[tuple[str, str], EventPublisher] = {}
        self._subs: list[EventSubscriber] = []
        self._tasks: list[asyncio.Task] = []
        self._remote: dict[str, tuple[str, float]] = {}  # request_id -> (model, booked at)
        self._starting: set[tuple[str, str]] = set()

    def router_for(self, model: str) -> KvRouter | None:
        for lookup in self._lookups:
            router = lookup(model)
            if router is not None:
                return router
        return None

    async def join(self, namespace: str, component: str) -> None:
        key = (namespace, component)
        if key in self._pubs or key in self._starting:
            return
        self._starting.add(key)
        try:
            sub = await create_subscriber(self.kind, self.store, namespace, component, TOPIC)
            self._subs.append(sub)
            self._tasks.append(asyncio.get_running_loop().create_task(self._consume(sub), name="replica-sync"))
            self._pubs[key] = await create_publisher(self.kind, self.store, namespace, component, TOPIC,
                                                     self.instance_id)
            log.info("router replica sync on %s/%s (router id %s)", namespace, component, self.router_id)
        finally:
            self._starting.discard(key)

    def publish(self, namespace: str, component: str, event: ActiveSequenceEvent) -> None:
        pub = self._pubs.get((namespace, component))
        if pub is not None:
            with contextlib.suppress(RuntimeError):  # closed at shutdown: nothing more to tell
                pub.offer(_encode(event))

    def event(self, model: str, request_id: str, kind: str, **fields) -> ActiveSequenceEvent:
        return ActiveSequenceEvent(router_id=self.router_id, model=model, request_id=request_id, kind=kind, **fields)

    async def _consume(self, sub: EventSubscriber) -> None:
        async for _publisher, payload in sub:
            try:
                event = _decode(payload)
            except Exception:
                continue
            if event.router_id != self.router_id:
                self.apply(event)

    def apply(self, event: ActiveSequenceEvent) -> None:
        router = self.router_for(event.model)
        if router is None:
            return
        active = router.active
        if event.kind == "add":
            key = (event.worker_id, event.dp_rank)
            if key not in active.workers() or event.request_id in self._remote:
                return
            active.add_request(key, event.request_id, event.seq_hashes, event.isl, event.overlap_blocks)
            self._remote[event.request_id] = (event.model, time.monotonic())
            self._expire(router)
        elif event.kind == "prefill":
            active.mark_prefill_completed(event.request_id)
        else:
            active.free(event.request_id)
            self._remote.pop(event.request_id, None)
        self.applied += 1

    def _expire(self, router: KvRouter) -> None:
        if len(self._remote) < 256:
            return
        deadline = time.monotonic() - REMOTE_TTL
        for rid in [r for r, (_, at) in self._remote.items() if at < deadline]:
            model, _ = self._remote.pop(rid)
            owner = self.router_for(model)
            if owner is not None:
                owner.active.free(rid)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            await sub.close()
        for pub in self._pubs.values():
            await pub.close()

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

import logging
import time
from typing import Callable, Literal

import msgspec

from dynamo.router.kv_router import KvRouter
from dynamo.router.peer_topic import PeerTopic

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
        self.router_id = router_id
        self.router_for = router_for
        self.topic = PeerTopic(store, kind, instance_id, TOPIC, self._receive)
        self.applied = 0
        self._remote: dict[str, tuple[str, float]] = {}  # request_id -> (model, booked at)

    async def join(self, namespace: str, component: str) -> None:
        if await self.topic.join(namespace, component):
            log.info("router replica sync on %s/%s (router id %s)", namespace, component, self.router_id)

    def publish(self, namespace: str, component: str, event: ActiveSequenceEvent) -> None:
        self.topic.publish(namespace, component, _encode(event))

    def event(self, model: str, request_id: str, kind: str, **fields) -> ActiveSequenceEvent:
        return ActiveSequenceEvent(router_id=self.router_id, model=model, request_id=request_id, kind=kind, **fields)

    def _receive(self, payload: bytes) -> None:
        event = _decode(payload)
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
        await self.topic.close()

"""Router replicas sharing their bookings (`--router-replica-sync`).

Each router publishes what it books (add / prefill complete / free, with its router id)
on the event-plane topic `active_sequences_events` of the worker component it routes to,
and applies the other replicas' events to its own load view, so two frontends in front
of the same workers do not both pile onto the worker that looks idle to each alone.
Only load is shared; cache state comes to every replica from the workers' KV events.
An `add` carries the answer's expected length (`expected_output_tokens`, as Dynamo's
`AddRequest` does), so the output blocks a replica books are booked alike everywhere.

Delivery is at-most-once, and a replica can die with bookings open:
- every replica says it is alive every `HEARTBEAT_SECS`; one not heard from for
  `SILENT_AFTER` seconds is gone (crashed, partitioned, restarted under a new id), and
  every booking it made is freed, so its load does not skew the others' routing for good;
- a live replica's lost `free` would leave load booked, so remote bookings also expire
  after `REMOTE_TTL` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Literal

import msgspec

from dynamo.router.active_sequences import ActiveSequences
from dynamo.router.kv_router import KvRouter
from dynamo.router.peer_topic import PeerTopic

log = logging.getLogger(__name__)

TOPIC = "active_sequences_events"
REMOTE_TTL = 600.0
HEARTBEAT_SECS = 2.0
SILENT_AFTER = 10.0


class ActiveSequenceEvent(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    router_id: str
    model: str
    request_id: str
    kind: Literal["add", "prefill", "free", "alive"]
    worker_id: int = 0
    dp_rank: int = 0
    seq_hashes: list[int] = []
    isl: int = 0
    overlap_blocks: int = 0
    expected_output_tokens: int = 0  # 0: unknown


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
        # request_id -> (model, router id, booked at, the ActiveSequences it is booked in: the pool's route may be
        # replaced meanwhile, an adapter unloaded, a role flip, a block-size rebuild, and its worker's load is shared)
        self._remote: dict[str, tuple[str, str, float, ActiveSequences]] = {}
        self._heard: dict[str, float] = {}  # router id -> when it was last heard from
        self._beat: asyncio.Task | None = None
        self._joined: list[tuple[str, str]] = []

    async def join(self, namespace: str, component: str) -> None:
        if await self.topic.join(namespace, component):
            self._joined.append((namespace, component))
            log.info("router replica sync on %s/%s (router id %s)", namespace, component, self.router_id)
            if self._beat is None:
                self._beat = asyncio.get_running_loop().create_task(self._heartbeat(), name="replica-sync-heartbeat")

    async def _heartbeat(self) -> None:
        alive = _encode(self.event("", "", "alive"))
        while True:  # at once on joining, then every HEARTBEAT_SECS
            for namespace, component in self._joined:
                self.topic.publish(namespace, component, alive)
            self.forget_silent()
            self._expire()
            await asyncio.sleep(HEARTBEAT_SECS)

    @property
    def peers_alive(self) -> int:
        """Other replicas heard saying they are alive (and not since forgotten as silent)."""
        return len(self._heard)

    def publish(self, namespace: str, component: str, event: ActiveSequenceEvent) -> None:
        self.topic.publish(namespace, component, _encode(event))

    def event(self, model: str, request_id: str, kind: str, **fields) -> ActiveSequenceEvent:
        return ActiveSequenceEvent(router_id=self.router_id, model=model, request_id=request_id, kind=kind, **fields)

    def _receive(self, payload: bytes) -> None:
        event = _decode(payload)
        if event.router_id != self.router_id:
            self.apply(event)

    def apply(self, event: ActiveSequenceEvent) -> None:
        # Only replicas that say they are alive can be missed: an older version never does (a rolling
        # upgrade), so its bookings wait for REMOTE_TTL instead of being freed while they run.
        if event.kind == "alive":
            self._heard[event.router_id] = time.monotonic()
            return
        if event.router_id in self._heard:
            self._heard[event.router_id] = time.monotonic()
        if event.kind == "add":
            if not self._book(event):
                return
        elif event.request_id not in self._remote:
            return  # its booking was not taken in here (a worker or pool this replica does not route)
        elif event.kind == "prefill":
            self._remote[event.request_id][3].mark_prefill_completed(event.request_id)
        else:
            self._free_remote(event.request_id)
        self.applied += 1

    def _book(self, event: ActiveSequenceEvent) -> bool:
        router = self.router_for(event.model)
        if router is None:
            return False
        active, key = router.active, (event.worker_id, event.dp_rank)
        if key not in active.workers() or event.request_id in self._remote:
            return False
        answer = event.expected_output_tokens or None
        active.add_request(key, event.request_id, event.seq_hashes, event.isl, event.overlap_blocks,
                           router.output_blocks_for(event.isl, answer), answer_tokens=answer)
        self._remote[event.request_id] = (event.model, event.router_id, time.monotonic(), active)
        return True

    def forget_silent(self) -> int:
        """Free every booking of the replicas not heard from for `SILENT_AFTER` s; how many."""
        deadline = time.monotonic() - SILENT_AFTER
        gone = {router_id for router_id, at in self._heard.items() if at < deadline}
        if not gone:
            return 0
        for router_id in gone:
            del self._heard[router_id]
        stale = [rid for rid, (_, router_id, _, _) in self._remote.items() if router_id in gone]
        for rid in stale:
            self._free_remote(rid)
        if stale:
            log.warning("router replica(s) %s went silent: freed the %d booking(s) they held",
                        ", ".join(sorted(gone)), len(stale))
        return len(stale)

    def _expire(self) -> None:
        deadline = time.monotonic() - REMOTE_TTL
        for rid in [r for r, (_, _, at, _) in self._remote.items() if at < deadline]:
            self._free_remote(rid)

    def _free_remote(self, request_id: str) -> None:
        self._remote.pop(request_id)[3].free(request_id)

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        await self.topic.close()

"""Session bindings shared between frontend replicas (NVIDIA Dynamo does the same whenever session
affinity is on): each replica tells the others, on the event-plane topic
`session_affinity_events` of the worker component, when it binds a session (or moves it), when
the session's last request there ends (the others start its idle TTL again), and when a final
request closes it. A replica takes a binding it hears of only when it has no live one of its own
and the worker is one it routes to; its own TTL governs from then on.

Advisory, like everything on the event plane: a lost event costs affinity, never a request.
For strict affinity across replicas, send a session to one frontend (hash its header at ingress).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Literal

import msgspec

from dynamo.router.peer_topic import PeerTopic

if TYPE_CHECKING:
    from dynamo.router.session_affinity import AffinityTable

log = logging.getLogger(__name__)

TOPIC = "session_affinity_events"


class AffinityEvent(msgspec.Struct, kw_only=True, array_like=True):
    router_id: str
    pool: str  # the pool's routing-state name: the model, or `model/prefill`
    session: str
    worker: int
    kind: Literal["bind", "close"]
    ttl: float | None = None  # the binding's idle timeout (a client-asked one may differ from the replica's)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AffinityEvent).decode


class AffinitySync:
    """Shares `table`'s bindings; `routable(pool, worker)` says whether this replica routes to it."""

    def __init__(self, store, kind: str | None, router_id: str, instance_id: int, table: AffinityTable,
                 routable: Callable[[str, int], bool]) -> None:
        self.router_id = router_id
        self.table = table
        self.routable = routable
        self.topic = PeerTopic(store, kind, instance_id, TOPIC, self._receive)
        self.applied = 0

    async def join(self, namespace: str, component: str) -> None:
        if await self.topic.join(namespace, component):
            log.info("session affinity shared with router replicas on %s/%s", namespace, component)

    def tell(self, namespace: str, component: str, pool: str, session: str, worker: int,
             kind: Literal["bind", "close"], ttl: float | None = None) -> None:
        event = AffinityEvent(router_id=self.router_id, pool=pool, session=session, worker=worker, kind=kind,
                              ttl=ttl)
        self.topic.publish(namespace, component, _encode(event))

    def _receive(self, payload: bytes) -> None:
        event = _decode(payload)
        if event.router_id == self.router_id or not self.routable(event.pool, event.worker):
            return
        key = (event.pool, event.session)
        if event.kind == "bind":
            self.table.adopt(key, event.worker, event.ttl)
        else:
            self.table.close(key)
        self.applied += 1

    async def close(self) -> None:
        await self.topic.close()

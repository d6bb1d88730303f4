"""Router replicas talking to each other on an event-plane topic of the worker components they
route to: one publisher and one subscriber per (namespace, component), joined on first use.
The router replica features (`replica_sync`: bookings; `affinity_sync`: session bindings) each
own one; this module owns the plumbing and that every task it starts is cancelled at `close`.

Delivery is the event plane's, at-most-once: what is shared here must be advisory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from dynamo.runtime.event_plane.base import EventPublisher, EventSubscriber, create_publisher, create_subscriber

log = logging.getLogger(__name__)


class PeerTopic:
    """`on_payload(payload)` gets every payload published on `topic` by any process, this one included
    (callers tell their own events apart by an id they put in them)."""

    def __init__(self, store, kind: str | None, instance_id: int, topic: str,
                 on_payload: Callable[[bytes], None]) -> None:
        self.store = store
        self.kind = kind
        self.instance_id = instance_id
        self.topic = topic
        self.on_payload = on_payload
        self._pubs: dict[tuple[str, str], EventPublisher] = {}
        self._subs: list[EventSubscriber] = []
        self._tasks: list[asyncio.Task] = []
        self._starting: set[tuple[str, str]] = set()
        self._closed = False

    def joined(self, namespace: str, component: str) -> bool:
        return (namespace, component) in self._pubs

    async def join(self, namespace: str, component: str) -> bool:
        """Publish and listen on the topic of this component (once); True when this call joined it."""
        key = (namespace, component)
        if key in self._pubs or key in self._starting or self._closed:
            return False
        self._starting.add(key)
        try:
            sub = await create_subscriber(self.kind, self.store, namespace, component, self.topic)
            self._subs.append(sub)
            self._tasks.append(asyncio.get_running_loop().create_task(self._consume(sub), name=self.topic))
            self._pubs[key] = await create_publisher(self.kind, self.store, namespace, component, self.topic,
                                                     self.instance_id)
            return True
        finally:
            self._starting.discard(key)

    def publish(self, namespace: str, component: str, payload: bytes) -> None:
        pub = self._pubs.get((namespace, component))
        if pub is not None:
            with contextlib.suppress(RuntimeError):  # closed at shutdown: nothing more to tell
                pub.offer(payload)

    async def _consume(self, sub: EventSubscriber) -> None:
        async for _publisher, payload in sub:
            try:
                self.on_payload(payload)
            except Exception as exc:  # one malformed event must not end the subscription
                log.debug("%s: event dropped: %s", self.topic, exc)

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

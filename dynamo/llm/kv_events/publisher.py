"""Worker-side publishing of KV events and load metrics on the event plane.

Engines report events from synchronous code (a scheduler step); `KvEventPublisher`
queues them (bounded: if the event plane stalls, the oldest are dropped and the
router sees an event-id gap) and one owned task sends them in batches: one event-plane
message carries every event queued since the last send (at most `MAX_BATCH`), as the
msgpack list of RouterEvents Dynamo's publisher sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from dynamo.llm.kv_events.protocol import KV_EVENTS_TOPIC, KV_METRICS_TOPIC, KvCacheEvent, LoadMetrics, \
    RouterEvent, StorageTier, encode_router_events, load_metrics_encoder
from dynamo.runtime.event_plane.base import EventPublisher, create_publisher

log = logging.getLogger(__name__)

MAX_BATCH = 256  # events per message: bounds one message's size after a burst


class KvEventPublisher:
    def __init__(self, publisher: EventPublisher, worker_id: int, max_pending: int = 65536) -> None:
        self.publisher = publisher
        self.worker_id = worker_id
        self._pending: deque[RouterEvent] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.published = 0

    @classmethod
    async def create(cls, kind: str | None, store, namespace: str, component: str,
                     worker_id: int, endpoint: str | None = None) -> "KvEventPublisher":
        """`endpoint`: the worker's serving endpoint, the scope Dynamo advertises KV events under."""
        publisher = await create_publisher(kind, store, namespace, component, KV_EVENTS_TOPIC, worker_id, endpoint)
        relay = cls(publisher, worker_id)
        relay._task = asyncio.get_running_loop().create_task(relay._run())
        return relay

    def push(self, event: KvCacheEvent, storage_tier: StorageTier = "device") -> None:
        """Called from engine code (sync); never blocks."""
        self._pending.append(RouterEvent(worker_id=self.worker_id, event=event, storage_tier=storage_tier))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                try:
                    await self.publisher.publish(encode_router_events(batch))
                    self.published += len(batch)
                except Exception as exc:  # keep the engine serving if the event plane hiccups
                    log.warning("KV event publish failed: %s", exc)

    async def close(self) -> None:
        await _cancel(self._task)
        await self.publisher.close()


class LoadPublisher:
    """Publishes the engine's load snapshot on `kv_metrics` every `interval` seconds."""

    def __init__(self, publisher: EventPublisher, snapshot, interval: float = 0.5) -> None:
        self.publisher = publisher
        self.snapshot = snapshot
        self.interval = interval
        self._task: asyncio.Task | None = None

    @classmethod
    async def create(cls, kind: str | None, store, namespace: str, component: str, worker_id: int,
                     snapshot, interval: float = 0.5) -> "LoadPublisher":
        publisher = await create_publisher(kind, store, namespace, component, KV_METRICS_TOPIC, worker_id)
        relay = cls(publisher, snapshot, interval)
        relay._task = asyncio.get_running_loop().create_task(relay._run())
        return relay

    async def _run(self) -> None:
        encode = load_metrics_encoder.encode
        while True:
            await asyncio.sleep(self.interval)
            try:
                metrics: LoadMetrics = self.snapshot()
                await self.publisher.publish(encode(metrics))
            except Exception as exc:
                log.debug("load metrics publish failed: %s", exc)

    async def close(self) -> None:
        await _cancel(self._task)
        await self.publisher.close()


async def _cancel(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        try:
            await task
        except BaseException:
            pass

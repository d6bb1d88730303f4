"""The forward-pass-metrics (FPM) boundary: one message per engine scheduler iteration,
NVIDIA Dynamo's `ForwardPassMetrics` (version 1), on event-plane topic
`forward-pass-metrics` of the worker's namespace/component.

Engines call `FpmRelay.push()` from synchronous scheduler code; one owned task publishes.
Two deliberate choices:
- Thinning: at most `max_rate` messages per second leave the worker (the newest is kept,
  `counter_id` gaps show what was thinned), so a fast engine does not spend a core on
  metrics. Consumers fit models on samples, not on every step.
- Idle heartbeat: an idle engine sends one all-zero message (`wall_time` 0, as Dynamo)
  and the relay repeats the last message every `heartbeat_s`, so a planner that joins
  late, or lost a message on the lossy plane, still learns that the engine is idle.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from dynamo.runtime.event_plane.base import EventPublisher, create_publisher

log = logging.getLogger(__name__)

FPM_TOPIC = "forward-pass-metrics"
FPM_VERSION = 1


class ScheduledRequests(msgspec.Struct, kw_only=True):
    """What this iteration computed."""

    num_prefill_requests: int = 0
    sum_prefill_tokens: int = 0  # fresh (uncached) prompt tokens computed this step
    var_prefill_length: float = 0.0
    sum_prefill_kv_tokens: int = 0  # cached or earlier-chunk tokens the prefills attend to
    num_decode_requests: int = 0
    sum_decode_kv_tokens: int = 0
    var_decode_kv_tokens: float = 0.0


class QueuedRequests(msgspec.Struct, kw_only=True):
    """What waits for admission after this iteration."""

    num_prefill_requests: int = 0
    sum_prefill_tokens: int = 0
    var_prefill_length: float = 0.0
    num_decode_requests: int = 0  # preempted sequences (they resume decoding)
    sum_decode_kv_tokens: int = 0
    var_decode_kv_tokens: float = 0.0


class ForwardPassMetrics(msgspec.Struct, kw_only=True):
    worker_id: str
    dp_rank: int = 0
    counter_id: int = 0
    wall_time: float = 0.0  # seconds, schedule -> output
    scheduled_requests: ScheduledRequests = msgspec.field(default_factory=ScheduledRequests)
    queued_requests: QueuedRequests = msgspec.field(default_factory=QueuedRequests)
    version: int = FPM_VERSION

    @property
    def idle(self) -> bool:
        s, q = self.scheduled_requests, self.queued_requests
        return not (s.num_prefill_requests or s.num_decode_requests or q.num_prefill_requests
                    or q.num_decode_requests)


fpm_encoder = msgspec.msgpack.Encoder()
fpm_decoder = msgspec.msgpack.Decoder(ForwardPassMetrics)


def variance(values: list[int]) -> float:
    """Population variance (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / n


class FpmRelay:
    """Engine side: push() from the scheduler (sync, never blocks); one task publishes."""

    def __init__(self, publisher: EventPublisher, max_rate: float = 50.0, heartbeat_s: float = 1.0) -> None:
        self.publisher = publisher
        self.min_gap = 1.0 / max_rate if max_rate > 0 else 0.0
        self.heartbeat_s = heartbeat_s
        self._latest: ForwardPassMetrics | None = None
        self._fresh = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.published = 0
        self.pushed = 0

    @classmethod
    async def create(cls, store, namespace: str, component: str, instance_id: int, *, kind: str | None = None,
                     max_rate: float = 50.0, heartbeat_s: float = 1.0) -> "FpmRelay":
        publisher = await create_publisher(kind, store, namespace, component, FPM_TOPIC, instance_id)
        relay = cls(publisher, max_rate, heartbeat_s)
        relay._task = asyncio.get_running_loop().create_task(relay._run(), name="fpm-relay")
        return relay

    def push(self, fpm: ForwardPassMetrics) -> None:
        self.pushed += 1
        self._latest = fpm
        self._fresh = True
        self._wake.set()

    async def _run(self) -> None:
        last_sent = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            except asyncio.TimeoutError:
                pass  # quiet engine: repeat the last message below
            self._wake.clear()
            wait = last_sent + self.min_gap - time.monotonic()
            if self._fresh and wait > 0:
                await asyncio.sleep(wait)  # thinning: later pushes overwrite _latest meanwhile
            fpm = self._latest
            if fpm is None:
                continue
            self._fresh = False
            last_sent = time.monotonic()
            try:
                await self.publisher.publish(fpm_encoder.encode(fpm))
                self.published += 1
            except Exception as exc:  # the engine keeps serving if the event plane hiccups
                log.debug("FPM publish failed: %s", exc)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.publisher.close()


async def start_fpm_relay(runtime, namespace: str, component: str, **options) -> FpmRelay:
    """The one call a worker's start-up makes: a relay publishing under its instance id."""
    return await FpmRelay.create(runtime.store, namespace, component, runtime.instance_id, **options)

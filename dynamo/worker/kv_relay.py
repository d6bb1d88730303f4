"""KV events from an engine to the event plane, and the worker's half of router resync.

`KvSink` is where every KV event of this worker goes, whichever way the engine reports it
(in-process callback or a relayed ZMQ stream): into `LocalKvState` (answers a router that
lost events, on the `kv_query` endpoint) and out through `KvEventPublisher`.

`ZmqKvEventSource` subscribes to engine publishers that speak the vLLM/SGLang ZMQ format
(multipart `[topic, seq, msgpack([ts, [events], dp_rank])]`, decoded by
`EngineEventDecoder`): one SUB socket per publisher (DP rank), one task for all of them.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio

from dynamo.llm.kv_events.publisher import KvEventPublisher
from dynamo.llm.kv_events.engine_decoder import EngineEventDecoder, EngineEventError
from dynamo.llm.kv_events.protocol import KvCacheEvent, StorageTier
from dynamo.llm.kv_events.local_state import LocalKvState
from dynamo.worker.adapter import KvEmit

log = logging.getLogger(__name__)


class KvSink:
    def __init__(self, worker_id: int) -> None:
        self.local = LocalKvState(worker_id)
        self.publisher: KvEventPublisher | None = None

    def push(self, event: KvCacheEvent, storage_tier: StorageTier = "device") -> None:
        """Called from engine code (sync); never blocks. Dropped until publishing is attached. The
        local state (what a router's resync reads) is the device tier's; offloaded tiers are published."""
        if self.publisher is not None:
            if storage_tier == "device":
                self.local.observe(event)
            else:
                self.local.observe_other_tier(event)
            self.publisher.push(event, storage_tier)


class ZmqKvEventSource:
    def __init__(self, endpoints: dict[int, tuple[str, bool]], topic: str, decoder: EngineEventDecoder,
                 engine: str = "engine") -> None:
        self.endpoints = endpoints  # dp rank -> (address, whether we bind it)
        self.topic = topic
        self.decoder = decoder
        self.engine = engine
        self.relayed = 0
        self._ctx = zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []
        self._task: asyncio.Task | None = None

    async def start(self, emit: KvEmit) -> None:
        poller = zmq.asyncio.Poller()
        for rank, (endpoint, bind) in sorted(self.endpoints.items()):
            sock = self._ctx.socket(zmq.SUB)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt_string(zmq.SUBSCRIBE, self.topic)
            if bind:  # the engine was given a connect-style endpoint: it connects out to us
                sock.bind(endpoint)
            else:
                sock.connect(endpoint)
            poller.register(sock, zmq.POLLIN)
            self._sockets.append(sock)
            log.info("relaying %s KV events (dp rank %d) from %s", self.engine, rank, endpoint)
        self._task = asyncio.get_running_loop().create_task(self._run(poller, emit), name="kv-event-relay")

    async def _run(self, poller: zmq.asyncio.Poller, emit: KvEmit) -> None:
        while True:
            for sock, _ in await poller.poll():
                frames = await sock.recv_multipart()
                try:
                    events = self.decoder.decode(frames)
                except EngineEventError as exc:
                    log.warning("dropping undecodable KV event message: %s", exc)
                    continue
                for event in events:
                    emit(event.event, event.storage_tier)  # the engine's medium: CPU blocks are not device hits
                    self.relayed += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
        for sock in self._sockets:
            sock.close(linger=0)
        self._ctx.term()

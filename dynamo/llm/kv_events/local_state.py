"""The worker's half of KV-state re-sync: `LocalKvState` mirrors the blocks a worker has
announced (fed by the same events it publishes) and answers the request-plane endpoint
`worker_kv_indexer_query` with a `KvStateDump`, which a router that lost events (gap,
unknown parent) or started late applies in place of its view of that worker."""

from __future__ import annotations

from typing import AsyncIterator

import msgspec

from dynamo.llm.kv_events.protocol import KvCacheEvent, KvRemoved, KvStored, StoredBlock, WireKvCacheEvent, \
    from_wire_event, to_wire_event
from dynamo.runtime.rp_server import RequestContext

KV_QUERY_ENDPOINT = "worker_kv_indexer_query"


class KvStateDump(msgspec.Struct, kw_only=True):
    """A worker's whole announced KV state: one `stored` event per block, parents first."""

    worker_id: int
    last_event_id: int | None
    events: list[KvCacheEvent]


class _WireDump(msgspec.Struct):
    """On the wire the events carry Dynamo's externally tagged data (see protocol)."""

    worker_id: int
    last_event_id: int | None
    events: list[WireKvCacheEvent]


_encoder = msgspec.msgpack.Encoder()
_wire_decoder = msgspec.msgpack.Decoder(_WireDump)


def encode_dump(dump: KvStateDump) -> bytes:
    return _encoder.encode(_WireDump(dump.worker_id, dump.last_event_id, [to_wire_event(e) for e in dump.events]))


def decode_dump(payload: bytes) -> KvStateDump:
    wire = _wire_decoder.decode(payload)
    return KvStateDump(worker_id=wire.worker_id, last_event_id=wire.last_event_id,
                       events=[from_wire_event(e) for e in wire.events])


class LocalKvState:
    """Worker side: the blocks this worker announced, per dp_rank, in store order."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        # dp_rank -> {external block hash -> (parent hash, tokens hash)}
        self._blocks: dict[int, dict[int, tuple[int | None, int]]] = {}
        self._last_event_id: int | None = None

    def observe(self, event: KvCacheEvent) -> None:
        blocks = self._blocks.setdefault(event.dp_rank, {})
        data = event.data
        if isinstance(data, KvStored):
            parent = data.parent_hash
            for block in data.blocks:
                blocks[block.block_hash] = (parent, block.tokens_hash)
                parent = block.block_hash
        elif isinstance(data, KvRemoved):
            for h in data.block_hashes:
                blocks.pop(h, None)
        else:
            blocks.clear()
        self._last_event_id = event.event_id

    def observe_other_tier(self, event: KvCacheEvent) -> None:
        """An offloaded tier's event: not device state, but its id is in the worker's one sequence (a
        router resynced to this dump must not take the next event for a gap)."""
        self._last_event_id = event.event_id

    def dump(self) -> KvStateDump:
        events = []
        for dp_rank, blocks in self._blocks.items():
            for block_hash, (parent, tokens_hash) in blocks.items():
                stored = KvStored(parent_hash=parent, blocks=[StoredBlock(block_hash=block_hash, tokens_hash=tokens_hash)])
                events.append(KvCacheEvent(event_id=self._last_event_id or 0, data=stored, dp_rank=dp_rank))
        return KvStateDump(worker_id=self.worker_id, last_event_id=self._last_event_id, events=events)

    async def handler(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The `worker_kv_indexer_query` endpoint: one message, the full dump."""
        yield encode_dump(self.dump())

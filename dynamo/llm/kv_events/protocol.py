"""KV events: the router-internal format (NVIDIA Dynamo's `RouterEvent`) that workers
publish on the event plane topic `kv-events`, and the load metrics on `kv_metrics`.

`stored` carries, per block, the engine's own (external) block hash and the
LocalBlockHash of its tokens (see `dynamo.llm.kv_events.hashing`); the router walks its
radix tree by the LocalBlockHash and uses external hashes only as per-worker ids.

Wire layout (Dynamo 1.6's, byte for byte; tests/compat/test_vectors.py holds it to the
bytes Dynamo's own publisher emitted): one event-plane payload is a msgpack *list* of
RouterEvent maps `{worker_id, storage_tier, residency_domain, event: {event_id, data,
dp_rank}}`, where `data` is tagged externally as serde does: `{"stored": {parent_hash,
start_position, blocks: [{block_hash, tokens_hash, mm_extra_info}]}}`,
`{"removed": {block_hashes}}`, or the bare string `"cleared"` (a unit variant). Block
hashes are u64. In memory the data stays one of `KvStored | KvRemoved | KvCleared`, so the
router dispatches on type; `encode_router_events` / `decode_router_events` convert.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

KV_EVENTS_TOPIC = "kv-events"
KV_METRICS_TOPIC = "kv_metrics"

StorageTier = Literal["device", "host_pinned", "disk", "external"]


class StoredBlock(msgspec.Struct, kw_only=True):
    block_hash: int  # ExternalSequenceBlockHash (engine's own id for the block), u64
    tokens_hash: int  # LocalBlockHash (content hash, seed 1337)
    mm_extra_info: Any = None  # Dynamo's multimodal block info; null for text blocks


class KvStored(msgspec.Struct, kw_only=True):
    parent_hash: int | None
    start_position: int | None = None  # Dynamo: position of the first block when known
    blocks: list[StoredBlock]


class KvRemoved(msgspec.Struct, kw_only=True):
    block_hashes: list[int]


class KvCleared(msgspec.Struct):
    pass


KvEventData = KvStored | KvRemoved | KvCleared


class KvCacheEvent(msgspec.Struct, kw_only=True):
    event_id: int  # monotonic per (worker, dp_rank); a gap means events were lost
    data: Any  # KvEventData (kept untyped: the wire form is externally tagged, see module doc)
    dp_rank: int = 0


class RouterEvent(msgspec.Struct, kw_only=True):
    worker_id: int
    storage_tier: StorageTier = "device"
    residency_domain: str = "worker"  # Dynamo: whose cache the blocks live in (the worker's own)
    event: KvCacheEvent


# -- wire form ---------------------------------------------------------------------------

class _TaggedData(msgspec.Struct, omit_defaults=True):
    """serde's external tag: exactly one of the keys is present."""

    stored: KvStored | None = None
    removed: KvRemoved | None = None


class WireKvCacheEvent(msgspec.Struct):
    event_id: int
    data: _TaggedData | str  # str: the unit variant "cleared"
    dp_rank: int = 0


class _WireRouterEvent(msgspec.Struct, kw_only=True):
    worker_id: int
    storage_tier: StorageTier = "device"
    residency_domain: str = "worker"
    event: WireKvCacheEvent


_CLEARED = "cleared"


def _tag(data: KvEventData) -> _TaggedData | str:
    if isinstance(data, KvStored):
        return _TaggedData(stored=data)
    if isinstance(data, KvRemoved):
        return _TaggedData(removed=data)
    if isinstance(data, KvCleared):
        return _CLEARED
    raise TypeError(f"not a KV event: {type(data).__name__}")


def _untag(data: _TaggedData | str) -> KvEventData:
    if isinstance(data, str):
        if data == _CLEARED:
            return KvCleared()
    elif data.stored is not None and data.removed is None:
        return data.stored
    elif data.removed is not None and data.stored is None:
        return data.removed
    raise msgspec.ValidationError(f"unknown KV event data {data!r}")


def to_wire_event(event: KvCacheEvent) -> WireKvCacheEvent:
    return WireKvCacheEvent(event.event_id, _tag(event.data), event.dp_rank)


def from_wire_event(wire: WireKvCacheEvent) -> KvCacheEvent:
    return KvCacheEvent(event_id=wire.event_id, data=_untag(wire.data), dp_rank=wire.dp_rank)


_encoder = msgspec.msgpack.Encoder()
_list_decoder = msgspec.msgpack.Decoder(list[_WireRouterEvent])


def encode_router_events(events: list[RouterEvent]) -> bytes:
    """One event-plane payload: Dynamo's msgpack list of RouterEvents."""
    return _encoder.encode([_WireRouterEvent(worker_id=e.worker_id, storage_tier=e.storage_tier,
                                             residency_domain=e.residency_domain, event=to_wire_event(e.event))
                            for e in events])


def decode_router_events(payload: bytes) -> list[RouterEvent]:
    """Inverse of `encode_router_events`; raises msgspec errors on anything else."""
    return [RouterEvent(worker_id=w.worker_id, storage_tier=w.storage_tier, residency_domain=w.residency_domain,
                        event=from_wire_event(w.event)) for w in _list_decoder.decode(payload)]


class LoadMetrics(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Per-step load snapshot a worker publishes (ForwardPassMetrics subset)."""

    worker_id: int
    dp_rank: int = 0
    request_active_slots: int = 0
    request_total_slots: int = 0
    kv_active_blocks: int = 0
    kv_total_blocks: int = 0
    num_requests_waiting: int = 0
    gpu_cache_usage_perc: float = 0.0
    gpu_prefix_cache_hit_rate: float = 0.0


load_metrics_encoder = msgspec.msgpack.Encoder()
load_metrics_decoder = msgspec.msgpack.Decoder(LoadMetrics)

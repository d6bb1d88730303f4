"""KV events: the router-internal format (NVIDIA Dynamo's `RouterEvent`) that workers
publish on the event plane topic `kv-events`, and the load metrics on `kv_metrics`.

`stored` carries, per block, the engine's own (external) block hash and the
LocalBlockHash of its tokens (see `dynamo.llm.kv_events.hashing`); the router walks its
radix tree by the LocalBlockHash and uses external hashes only as per-worker ids.
"""

from __future__ import annotations

from typing import Literal

import msgspec

KV_EVENTS_TOPIC = "kv-events"
KV_METRICS_TOPIC = "kv_metrics"


class StoredBlock(msgspec.Struct, kw_only=True):
    block_hash: int  # ExternalSequenceBlockHash (engine's own id for the block)
    tokens_hash: int  # LocalBlockHash (content hash, seed 1337)


class KvStored(msgspec.Struct, tag="stored", tag_field="type", kw_only=True):
    parent_hash: int | None
    blocks: list[StoredBlock]


class KvRemoved(msgspec.Struct, tag="removed", tag_field="type", kw_only=True):
    block_hashes: list[int]


class KvCleared(msgspec.Struct, tag="cleared", tag_field="type"):
    pass


KvEventData = KvStored | KvRemoved | KvCleared


class KvCacheEvent(msgspec.Struct, kw_only=True):
    event_id: int  # monotonic per (worker, dp_rank); a gap means events were lost
    data: KvEventData
    dp_rank: int = 0


class RouterEvent(msgspec.Struct, kw_only=True):
    worker_id: int
    event: KvCacheEvent
    storage_tier: Literal["device", "host_pinned", "disk", "external"] = "device"


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


router_event_encoder = msgspec.msgpack.Encoder()
router_event_decoder = msgspec.msgpack.Decoder(RouterEvent)
load_metrics_decoder = msgspec.msgpack.Decoder(LoadMetrics)

"""Decode vLLM's / SGLang's native ZMQ KV-event messages into our `RouterEvent`s.

Wire shape (engine publisher): multipart `[topic, seq (8-byte big-endian), payload]`;
payload is msgpack `[timestamp, [events...], dp_rank]` (array-like batch) or the map
`{"ts", "events", "data_parallel_rank"}`. Each event is either a tagged array
(`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
lora_name, ...]`, `["BlockRemoved", block_hashes, medium, ...]`, `["AllBlocksCleared"]`) or
a map with a `"type"` field naming the class (Dynamo's docs, msgspec tagged structs).

Conversion:
- `tokens_hash` = LocalBlockHash of each full block of `token_ids` (block size from the
  event), namespaced by the LoRA name (`lora_name`, else `lora_names[lora_id]`, else
  `str(lora_id)`), so it matches what the router computes for a request's prompt. A sequence's
  first block (no parent, first of the event) whose `extra_keys` hold a string under
  `SALT_PREFIX` (the worker's `cache_salt` for a request's `nvext.cache_salt`) hashes in that
  salt's namespace, as the router hashes the request's first block.
- Engine block hashes become u64: ints (signed or unsigned) are bit-cast; bytes (newer
  vLLM's sha256-based hashes) map to `xxh3_64(bytes)`, stable across processes.
- `event_id` is the batch's `seq`: events of one batch share it, a lost batch shows as a
  gap (`seq > last + 1`) to the indexer.
- `medium` maps to the storage tier (GPU/None -> device, CPU -> host_pinned, DISK -> disk).
- Events for KV-cache groups other than 0 (hybrid models) are skipped.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import msgspec
import xxhash

from dynamo.llm.kv_events.hashing import block_hashes, to_u64
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvCleared, KvRemoved, KvStored, RouterEvent, StoredBlock

log = logging.getLogger(__name__)

_STORED_FIELDS = ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
                  "lora_name", "extra_keys", "group_idx")
_REMOVED_FIELDS = ("block_hashes", "medium", "group_idx")
_TIERS = {None: "device", "GPU": "device", "CPU": "host_pinned", "DISK": "disk"}
# Workers hand the engine a request's cache salt under this prefix (NVIDIA Dynamo's vLLM worker uses the
# same), so an event's extra keys tell it from a LoRA name or a multimodal key.
SALT_PREFIX = "dynamo-cache-salt:"


class EngineEventError(ValueError):
    """A message that is not a KV-event batch."""


def external_hash(value: int | bytes) -> int:
    """Engine block hash -> u64 (ints bit-cast; bytes hashed with xxh3_64)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return xxhash.xxh3_64_intdigest(bytes(value))
    return to_u64(int(value))


class EngineEventDecoder:
    def __init__(self, worker_id: int, block_size: int, lora_names: Mapping[int, str] | None = None) -> None:
        self.worker_id = worker_id
        self.block_size = block_size
        self.lora_names = dict(lora_names or {})
        self.last_seq: int | None = None
        self.skipped = 0
        self._warned_block_size = False

    def decode(self, frames: list[bytes]) -> list[RouterEvent]:
        if len(frames) == 3:
            _, seq_bytes, payload = frames
        elif len(frames) == 2:
            seq_bytes, payload = frames
        else:
            raise EngineEventError(f"expected [topic, seq, payload], got {len(frames)} frames")
        seq = int.from_bytes(seq_bytes, "big", signed=True)
        try:
            batch = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError as exc:
            raise EngineEventError(f"bad msgpack payload: {exc}") from None
        if isinstance(batch, dict):
            events, dp_rank = batch.get("events", []), batch.get("data_parallel_rank")
        elif isinstance(batch, list) and len(batch) >= 2:
            events, dp_rank = batch[1], batch[2] if len(batch) > 2 else None
        else:
            raise EngineEventError("payload is not an event batch")
        self.last_seq = seq
        dp_rank = dp_rank or 0
        out = []
        for raw in events:
            converted = self._convert(raw, seq, dp_rank)
            if converted is None:
                self.skipped += 1
            else:
                out.append(converted)
        return out

    def _convert(self, raw: Any, seq: int, dp_rank: int) -> RouterEvent | None:
        kind, fields = _fields(raw)
        if fields.get("group_idx") not in (None, 0):
            return None
        if kind == "BlockStored":
            data = self._stored(fields)
        elif kind == "BlockRemoved":
            data = KvRemoved(block_hashes=[external_hash(h) for h in fields.get("block_hashes") or []])
        elif kind == "AllBlocksCleared":
            data = KvCleared()
        else:
            log.debug("skipping unknown KV event %r", kind)
            return None
        tier = _TIERS.get(fields.get("medium"), "external")
        return RouterEvent(worker_id=self.worker_id, event=KvCacheEvent(event_id=seq, data=data, dp_rank=dp_rank),
                           storage_tier=tier)

    def _stored(self, fields: dict[str, Any]) -> KvStored:
        hashes = fields.get("block_hashes") or []
        block_size = fields.get("block_size") or self.block_size
        if block_size != self.block_size and not self._warned_block_size:
            self._warned_block_size = True  # hashes will not match the router's prompt hashes
            log.warning("worker %s publishes block_size %d, router uses %d", self.worker_id, block_size,
                        self.block_size)
        lora = fields.get("lora_name")
        lora_id = fields.get("lora_id")
        if not lora and lora_id:
            lora = self.lora_names.get(lora_id, str(lora_id))
        parent = fields.get("parent_block_hash")
        salt = first_block_salt(fields.get("extra_keys")) if parent is None else None
        local = block_hashes(fields.get("token_ids") or [], block_size, lora, salt)
        if len(local) != len(hashes):
            log.warning("BlockStored with %d block hashes but %d full token blocks; truncating",
                        len(hashes), len(local))
        return KvStored(
            parent_hash=None if parent is None else external_hash(parent),
            blocks=[StoredBlock(block_hash=external_hash(h), tokens_hash=t) for h, t in zip(hashes, local)],
        )


def first_block_salt(extra_keys: Any) -> str | None:
    """The cache salt among the first block's extra keys (vLLM publishes them untagged, one entry per
    block: the LoRA name, multimodal pairs, the salt), without `SALT_PREFIX`; None without one."""
    if not isinstance(extra_keys, (list, tuple)) or not extra_keys:
        return None
    keys = extra_keys[0]
    if not isinstance(keys, (list, tuple)):
        return None
    return next((k[len(SALT_PREFIX):] for k in keys if isinstance(k, str) and k.startswith(SALT_PREFIX)), None)


def _fields(raw: Any) -> tuple[str | None, dict[str, Any]]:
    if isinstance(raw, dict):
        return raw.get("type"), raw
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        kind = raw[0]
        names = _STORED_FIELDS if kind == "BlockStored" else _REMOVED_FIELDS if kind == "BlockRemoved" else ()
        return kind, dict(zip(names, raw[1:]))
    return None, {}

"""KV block hashing compatible with NVIDIA Dynamo.

- Token ids are serialized as u32 little-endian; only full blocks are hashed.
- LocalBlockHash (content hash of one block): xxh3_64 with seed 1337; a LoRA adapter
  (or cache salt) namespaces the hash by adding xxh3_64(name) to the seed (wrapping).
- SequenceHash (chained prefix hash): seq[0] = local[0];
  seq[i] = xxh3_64(u64le(seq[i-1]) || u64le(local[i]), seed 1337).
"""

from __future__ import annotations

import struct
from array import array
from typing import Sequence

import xxhash

SEED = 1337
_MASK = (1 << 64) - 1
_PAIR = struct.Struct("<QQ")


def lora_seed(lora_name: str | None) -> int:
    if not lora_name:
        return SEED
    return (SEED + xxhash.xxh3_64_intdigest(lora_name.encode())) & _MASK


def _u32le(tokens: Sequence[int]) -> bytes:
    buf = array("I", tokens)
    if buf.itemsize != 4:  # pragma: no cover - exotic platforms
        return struct.pack(f"<{len(tokens)}I", *tokens)
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big endian
        buf.byteswap()
    return buf.tobytes()


def block_hashes(tokens: Sequence[int], block_size: int, lora_name: str | None = None) -> list[int]:
    """LocalBlockHash of every full block of `tokens`."""
    seed = lora_seed(lora_name)
    full = len(tokens) - len(tokens) % block_size
    data = _u32le(tokens[:full])
    step = block_size * 4
    digest = xxhash.xxh3_64_intdigest
    return [digest(data[i : i + step], seed) for i in range(0, len(data), step)]


def sequence_hashes(local_hashes: Sequence[int]) -> list[int]:
    """Chained SequenceHash for a list of LocalBlockHashes."""
    out: list[int] = []
    digest = xxhash.xxh3_64_intdigest
    pack = _PAIR.pack
    prev = None
    for local in local_hashes:
        prev = local if prev is None else digest(pack(prev, local), SEED)
        out.append(prev)
    return out


def to_i64(value: int) -> int:
    """Bit-cast u64 -> i64 (engines publish signed 64-bit block hashes)."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_u64(value: int) -> int:
    return value & _MASK

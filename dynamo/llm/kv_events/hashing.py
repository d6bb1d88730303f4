"""KV block hashing compatible with NVIDIA Dynamo.

- Token ids are serialized as u32 little-endian; only full blocks are hashed.
- LocalBlockHash (content hash of one block): xxh3_64 with seed 1337; a LoRA adapter
  namespaces the hash by adding xxh3_64(name) to the seed (wrapping).
- A cache salt (`nvext.cache_salt`, a tenant's KV namespace) adds xxh3_64("cache_salt:" + salt)
  to the seed of a sequence's first block only, as vLLM keys it (the salt is among the extra keys
  of the block at token 0): every later block is reached through that one, so a prefix-tree
  lookup can never cross namespaces, and a sequence's chained hashes all differ.
- Media (images) salt the block that holds a request's first media placeholder the same way, with
  xxh3_64("media:" + key), `key` naming the media: blocks before it are shared with any request of the
  same text, that block and every later one only with requests of the same media. (The engine expands
  a placeholder into many tokens, so the frontend's later blocks could never match the engine's anyway;
  the salt keeps a router's own bookkeeping of them from matching another image's.)
- SequenceHash (chained prefix hash): seq[0] = local[0];
  seq[i] = xxh3_64(u64le(seq[i-1]) || u64le(local[i]), seed 1337).
"""

from __future__ import annotations

import struct
from array import array
from typing import NamedTuple, Sequence

import xxhash

SEED = 1337
_MASK = (1 << 64) - 1
_PAIR = struct.Struct("<QQ")


class MediaSalt(NamedTuple):
    """A request's media as its KV blocks see them: the token position of its first media placeholder
    and a key naming the media (a hash of their references, in order)."""

    start: int
    key: str


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


def salted_seed(seed: int, cache_salt: str | None) -> int:
    """The seed of a sequence's first block under `cache_salt` (unchanged without one)."""
    if not cache_salt:
        return seed
    return (seed + xxhash.xxh3_64_intdigest(b"cache_salt:" + cache_salt.encode())) & _MASK


def media_seed(seed: int, media_key: str) -> int:
    """The seed of the block holding a sequence's first media placeholder, for media named `media_key`."""
    return (seed + xxhash.xxh3_64_intdigest(b"media:" + media_key.encode())) & _MASK


def block_hashes(tokens: Sequence[int], block_size: int, lora_name: str | None = None,
                 cache_salt: str | None = None, media: MediaSalt | None = None) -> list[int]:
    """LocalBlockHash of every full block of `tokens` (a whole sequence: its first block is the
    salted one), the block holding `media`'s first placeholder salted by them."""
    seed = lora_seed(lora_name)
    full = len(tokens) - len(tokens) % block_size
    data = _u32le(tokens[:full])
    step = block_size * 4
    digest = xxhash.xxh3_64_intdigest
    out = [digest(data[i : i + step], seed) for i in range(0, len(data), step)]
    if cache_salt and out:
        out[0] = digest(data[:step], salted_seed(seed, cache_salt))
    if media is not None and media.start // block_size < len(out):
        at = media.start // block_size
        block_seed = salted_seed(seed, cache_salt) if at == 0 else seed
        out[at] = digest(data[at * step : (at + 1) * step], media_seed(block_seed, media.key))
    return out


def block_hash_at(tokens: Sequence[int], start: int, block_size: int, lora_name: str | None = None,
                  cache_salt: str | None = None, media: MediaSalt | None = None) -> int:
    """LocalBlockHash of the one block of `tokens` at token `start` of its sequence."""
    block = tokens[start : start + block_size]
    here = media is not None and media.start // block_size == start // block_size
    return block_hashes(block, block_size, lora_name, cache_salt if start == 0 else None,
                        MediaSalt(0, media.key) if here else None)[0]


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

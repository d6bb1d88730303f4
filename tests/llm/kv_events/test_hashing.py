"""Hashing vectors: fixed tokens -> fixed u64s, checked against xxhash directly."""

import struct

import xxhash

from dynamo.llm.kv_events.hashing import (MediaSalt, block_hash_at, block_hashes, lora_seed, sequence_hashes,
                                          to_i64, to_u64)

TOKENS = list(range(1, 9))  # two blocks of 4


def _local(tokens, seed=1337):
    return xxhash.xxh3_64_intdigest(struct.pack(f"<{len(tokens)}I", *tokens), seed)


def test_fixed_vectors():
    local = block_hashes(TOKENS, 4)
    assert local == [_local([1, 2, 3, 4]), _local([5, 6, 7, 8])]
    # pinned values; Dynamo itself produced them too (tests/compat/vectors/hashes.json)
    assert local == [14643705804678351452, 16777012769546811212]
    seq = sequence_hashes(local)
    assert seq[0] == local[0]
    assert seq[1] == xxhash.xxh3_64_intdigest(struct.pack("<QQ", local[0], local[1]), 1337)
    assert seq == [14643705804678351452, 4945711292740353085]


def test_partial_block_ignored():
    assert block_hashes(TOKENS + [9, 10, 11], 4) == block_hashes(TOKENS, 4)
    assert block_hashes([1, 2, 3], 4) == []


def test_chain_property():
    a = sequence_hashes(block_hashes([7] * 4 + [1, 2, 3, 4], 4))
    b = sequence_hashes(block_hashes([9] * 4 + [1, 2, 3, 4], 4))
    local_a, local_b = block_hashes([7] * 4 + [1, 2, 3, 4], 4), block_hashes([9] * 4 + [1, 2, 3, 4], 4)
    assert local_a[1] == local_b[1]  # same content
    assert a[1] != b[1]  # different prefix


def test_lora_namespacing():
    seed = (1337 + xxhash.xxh3_64_intdigest(b"my-adapter")) & (2**64 - 1)
    assert lora_seed("my-adapter") == seed
    assert block_hashes(TOKENS, 4, "my-adapter") == [_local([1, 2, 3, 4], seed), _local([5, 6, 7, 8], seed)]
    assert block_hashes(TOKENS, 4, "my-adapter") != block_hashes(TOKENS, 4)
    assert block_hashes(TOKENS, 4, None) == block_hashes(TOKENS, 4, "")


def test_signed_roundtrip():
    for v in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        assert to_u64(to_i64(v)) == v
    assert to_i64(2**64 - 1) == -1



def test_media_salt_the_block_of_the_first_image_and_through_it_the_rest():
    """Blocks before the first image placeholder are shared with any prompt of the same text; the block
    holding it (and, through the chain, every later one) only with prompts of the same images."""
    tokens = list(range(1, 17))  # four blocks of 4; the first image placeholder at token 9 (block 2)
    plain = block_hashes(tokens, 4)
    cat, dog = block_hashes(tokens, 4, media=MediaSalt(9, "cat")), block_hashes(tokens, 4, media=MediaSalt(9, "dog"))
    seed = (1337 + xxhash.xxh3_64_intdigest(b"media:cat")) & (2**64 - 1)
    assert cat[:2] == plain[:2] == dog[:2]
    assert cat[2] == _local(tokens[8:12], seed) and len({cat[2], dog[2], plain[2]}) == 3
    assert sequence_hashes(cat)[3] not in (sequence_hashes(dog)[3], sequence_hashes(plain)[3])
    assert block_hashes(tokens, 4, media=MediaSalt(9, "cat")) == cat  # the same images: the same blocks
    assert [block_hash_at(tokens, s, 4, media=MediaSalt(9, "cat")) for s in (0, 4, 8, 12)] == cat
    # An image in the first block, with a cache salt too: both salts, in the one block.
    both = block_hashes(tokens, 4, cache_salt="t", media=MediaSalt(2, "cat"))
    assert both[0] not in (block_hashes(tokens, 4, cache_salt="t")[0], block_hashes(tokens, 4, media=MediaSalt(2, "cat"))[0])
    assert [block_hash_at(tokens, s, 4, None, "t", MediaSalt(2, "cat")) for s in (0, 4, 8, 12)] == both
    # An image in the partial tail: no full block holds it, nothing changes.
    assert block_hashes(tokens[:14], 4, media=MediaSalt(13, "cat")) == plain[:3]


def test_a_cache_salt_namespaces_the_first_block_and_through_it_the_chain():
    salted = block_hashes(TOKENS, 4, cache_salt="tenant-a")
    plain = block_hashes(TOKENS, 4)
    seed = (1337 + xxhash.xxh3_64_intdigest(b"cache_salt:tenant-a")) & (2**64 - 1)
    assert salted[0] == _local([1, 2, 3, 4], seed) != plain[0]
    assert salted[1:] == plain[1:]  # later blocks are reached through the first
    assert block_hashes(TOKENS, 4, cache_salt="tenant-b")[0] not in (salted[0], plain[0])
    assert set(sequence_hashes(salted)).isdisjoint(sequence_hashes(plain))
    assert block_hashes(TOKENS, 4, cache_salt="") == plain
    # With a LoRA adapter both apply: the adapter's seed, salted for the first block.
    both = block_hashes(TOKENS, 4, "my-adapter", "tenant-a")
    assert both[1:] == block_hashes(TOKENS, 4, "my-adapter")[1:] and both[0] not in (salted[0], plain[0])
    # One block at a time (an engine hashing a block as it fills): the salt applies at token 0 only.
    assert [block_hash_at(TOKENS, start, 4, None, "tenant-a") for start in (0, 4)] == salted

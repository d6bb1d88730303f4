"""vLLM / SGLang ZMQ KV-event decoding, array-like and map shapes."""

import msgspec
import pytest
import xxhash

from dynamo.llm.kv_events.engine_decoder import SALT_PREFIX, EngineEventDecoder, EngineEventError, external_hash, \
    first_block_salt
from dynamo.llm.kv_events.hashing import block_hashes
from dynamo.router.indexer import KvIndexer
from dynamo.llm.kv_events.protocol import KvCleared, KvRemoved, KvStored

TOKENS = list(range(8))


def frames(seq, payload, topic=b"kv"):
    return [topic, seq.to_bytes(8, "big"), msgspec.msgpack.encode(payload)]


def test_array_like_batch():
    events = [
        ["BlockStored", [-5, 6], None, TOKENS, 4, None, "GPU"],
        ["BlockRemoved", [6], "GPU"],
        ["AllBlocksCleared"],
    ]
    out = EngineEventDecoder(worker_id=7, block_size=4).decode(frames(3, [1.5, events, 2]))
    assert [type(e.event.data) for e in out] == [KvStored, KvRemoved, KvCleared]
    assert all(e.worker_id == 7 and e.event.event_id == 3 and e.event.dp_rank == 2 for e in out)
    stored = out[0].event.data
    assert stored.parent_hash is None
    assert [b.block_hash for b in stored.blocks] == [2**64 - 5, 6]
    assert [b.tokens_hash for b in stored.blocks] == block_hashes(TOKENS, 4)
    assert out[1].event.data.block_hashes == [6]
    assert out[0].storage_tier == "device"


def test_map_shape_with_bytes_hashes_lora_and_tiers():
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    events = [
        {"type": "BlockStored", "block_hashes": [h1, h2], "parent_block_hash": b"\x00" * 32,
         "token_ids": TOKENS + [99], "block_size": 4, "lora_id": 3, "medium": "CPU"},
        {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": 7, "token_ids": TOKENS[:4],
         "block_size": 4, "lora_id": 3},
        {"type": "BlockRemoved", "block_hashes": [h1]},
        {"type": "AllBlocksCleared"},
        {"type": "SomethingNew"},
    ]
    dec = EngineEventDecoder(worker_id=1, block_size=4, lora_names={3: "adapter"})
    out = dec.decode(frames(0, {"ts": 0.0, "events": events}))
    assert len(out) == 4 and dec.skipped == 1
    first = out[0].event.data
    assert first.parent_hash == xxhash.xxh3_64_intdigest(b"\x00" * 32)
    assert [b.block_hash for b in first.blocks] == [external_hash(h1), external_hash(h2)]
    assert [b.tokens_hash for b in first.blocks] == block_hashes(TOKENS, 4, "adapter")
    assert out[0].storage_tier == "host_pinned" and out[1].storage_tier == "device"
    assert out[1].event.data.parent_hash == 7
    assert out[2].event.data.block_hashes == [external_hash(h1)]
    assert out[0].event.dp_rank == 0


def test_lora_name_field_and_other_kv_groups():
    events = [
        ["BlockStored", [1], None, TOKENS[:4], 4, 9, "GPU", "named"],
        {"type": "BlockStored", "block_hashes": [2], "parent_block_hash": None, "token_ids": TOKENS[:4],
         "block_size": 4, "lora_id": None, "group_idx": 1},
    ]
    out = EngineEventDecoder(1, 4).decode(frames(0, [0.0, events]))
    assert len(out) == 1
    assert out[0].event.data.blocks[0].tokens_hash == block_hashes(TOKENS[:4], 4, "named")[0]


def test_decoded_events_feed_indexer_and_gap():
    dec, idx = EngineEventDecoder(1, 4), KvIndexer()
    first = [["BlockStored", [11], None, TOKENS[:4], 4, None, None]]
    second = [["BlockStored", [12], 11, TOKENS[4:], 4, None, None]]
    assert [idx.apply_event(e) for e in dec.decode(frames(0, [0.0, first, 0]))] == ["ok"]
    assert [idx.apply_event(e) for e in dec.decode(frames(2, [0.0, second, 0]))] == ["gap"]
    assert idx.find_matches(block_hashes(TOKENS, 4)).scores == {(1, 0): 2}


def test_bad_messages():
    dec = EngineEventDecoder(1, 4)
    with pytest.raises(EngineEventError):
        dec.decode([b"only-one"])
    with pytest.raises(EngineEventError):
        dec.decode([b"t", (0).to_bytes(8, "big"), b"\xc1"])
    with pytest.raises(EngineEventError):
        dec.decode(frames(0, 5))


def test_a_salted_sequence_hashes_in_its_namespace_and_the_index_keeps_tenants_apart():
    """vLLM puts a request's cache salt among the extra keys of the block at token 0 only; the worker
    hands it over under SALT_PREFIX. Other extra keys (a LoRA name, a bare salt of someone else's) are
    not ours to read as a namespace."""
    salt = SALT_PREFIX + "tenant-a"
    tenant = [{"type": "BlockStored", "block_hashes": [21, 22], "parent_block_hash": None, "token_ids": TOKENS,
               "block_size": 4, "lora_id": None, "extra_keys": [[salt], None]},
              {"type": "BlockStored", "block_hashes": [23], "parent_block_hash": 22, "token_ids": TOKENS[:4],
               "block_size": 4, "lora_id": None, "extra_keys": [[salt]]}]  # a continuation: never salted
    other = [["BlockStored", [31, 32], None, TOKENS, 4, None, "GPU", None, [["someone-else"], None]]]
    dec, idx = EngineEventDecoder(1, 4), KvIndexer()
    out = dec.decode(frames(0, [0.0, tenant, 0]))
    assert [b.tokens_hash for b in out[0].event.data.blocks] == block_hashes(TOKENS, 4, cache_salt="tenant-a")
    assert out[1].event.data.blocks[0].tokens_hash == block_hashes(TOKENS[:4], 4)[0]
    for event in out:
        idx.apply_event(event)
    plain = EngineEventDecoder(2, 4).decode(frames(0, [0.0, other, 0]))
    assert [b.tokens_hash for b in plain[0].event.data.blocks] == block_hashes(TOKENS, 4)
    idx.apply_event(plain[0])
    assert idx.find_matches(block_hashes(TOKENS + TOKENS[:4], 4, cache_salt="tenant-a")).scores == {(1, 0): 3}
    assert idx.find_matches(block_hashes(TOKENS, 4)).scores == {(2, 0): 2}
    assert idx.find_matches(block_hashes(TOKENS, 4, cache_salt="tenant-b")).scores == {}
    assert first_block_salt([["adapter", salt]]) == "tenant-a" and first_block_salt(None) is None

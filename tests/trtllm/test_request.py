"""TRT-LLM's KV events in the shape our engine-event decoder reads: one BlockStored a block, chained by
parent, and TRT-LLM 1.3's per-block `cache_salt` as the extra key that namespaces a sequence's first block."""

from __future__ import annotations

from dynamo.llm.kv_events.engine_decoder import SALT_PREFIX, EngineEventDecoder
from dynamo.llm.kv_events.hashing import block_hashes
from dynamo.trtllm.request import kv_event_batch
from tests.llm.kv_events.test_engine_decoder import frames

TOKENS = list(range(1, 9))


def stored(parent, salt=None) -> dict:
    blocks = [{"block_hash": 11, "tokens": [{"token_id": t} for t in TOKENS[:4]]},
              {"block_hash": 12, "tokens": TOKENS[4:]}]
    if salt:
        for block in blocks:
            block["cache_salt"] = salt
    return {"event_id": 1, "data": {"type": "stored", "parent_hash": parent, "blocks": blocks}}


def test_stored_blocks_chain_and_a_salt_namespaces_only_the_sequence_start():
    decoder = EngineEventDecoder(1, 4)
    salted = decoder.decode(frames(0, [0.0, kv_event_batch(stored(None, SALT_PREFIX + "t"), 4), 0]))
    assert [e.event.data.parent_hash for e in salted] == [None, 11]
    hashes = [e.event.data.blocks[0].tokens_hash for e in salted]
    assert hashes == block_hashes(TOKENS, 4, cache_salt="t")
    continued = decoder.decode(frames(1, [0.0, kv_event_batch(stored(7, SALT_PREFIX + "t"), 4), 0]))
    assert [e.event.data.blocks[0].tokens_hash for e in continued] == block_hashes(TOKENS, 4)  # not a start
    plain = decoder.decode(frames(2, [0.0, kv_event_batch(stored(None), 4), 0]))
    assert [e.event.data.blocks[0].tokens_hash for e in plain] == block_hashes(TOKENS, 4)
    assert kv_event_batch({"data": {"type": "removed", "block_hashes": [11]}}, 4) == \
        [{"type": "BlockRemoved", "block_hashes": [11]}]

import pytest

from dynamo.mocker.kv_manager import KvManager, chain_hash, hash_blocks
from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes
from dynamo.llm.kv_events.protocol import KvCleared, KvRemoved, KvStored

BS = 4


def blocks(tokens):
    return hash_blocks(tokens, BS)


def make(capacity=8, caching=True):
    events = []
    return KvManager(capacity, BS, enable_prefix_caching=caching, on_event=events.append), events


def test_hash_helpers_match_router_hashing():
    tokens = list(range(12))
    local, seqs = blocks(tokens)
    assert local == block_hashes(tokens, BS) and seqs == sequence_hashes(local)
    assert chain_hash(None, local[0]) == seqs[0]
    assert chain_hash(seqs[0], local[1]) == seqs[1]


def test_acquire_stores_chain_and_reuse_counts():
    kv, events = make()
    local, seqs = blocks(list(range(12)))
    assert kv.cached_prefix(seqs) == 0
    assert kv.acquire(seqs, local)
    assert kv.num_active_blocks == 3 and kv.num_free_blocks == 5
    (ev,) = events
    assert ev.event_id == 1 and isinstance(ev.data, KvStored) and ev.data.parent_hash is None
    assert [b.block_hash for b in ev.data.blocks] == list(seqs)
    assert [b.tokens_hash for b in ev.data.blocks] == local
    # A second sequence with the same first two blocks shares them.
    local2, seqs2 = blocks(list(range(8)) + [99, 98, 97, 96])
    assert kv.cached_prefix(seqs2) == 2
    assert kv.blocks_to_activate(seqs2) == 1
    assert kv.acquire(seqs2, local2)
    assert kv.num_active_blocks == 4
    stored = events[-1].data
    assert stored.parent_hash == seqs[1] and len(stored.blocks) == 1
    assert stored.blocks[0].block_hash == seqs2[2]


def test_release_keeps_blocks_reusable_without_events():
    kv, events = make()
    local, seqs = blocks(list(range(8)))
    kv.acquire(seqs, local)
    kv.release(seqs)
    assert kv.num_active_blocks == 0 and kv.num_cached_blocks == 2
    assert kv.cached_prefix(seqs) == 2
    assert kv.acquire(seqs, local)  # reactivated: nothing new stored
    assert len(events) == 1 and kv.num_cached_blocks == 0


def test_eviction_oldest_first_and_leaves_before_parents():
    kv, events = make(capacity=4)
    la, a = blocks(list(range(8)))  # 2 blocks
    lb, b = blocks(list(range(100, 108)))  # 2 blocks
    kv.acquire(a, la)
    kv.acquire(b, lb)
    kv.release(a)  # a's leaf is older than its root
    kv.release(b)
    lc, c = blocks(list(range(200, 204)))
    assert kv.acquire(c, lc)
    removed = events[-2].data
    assert isinstance(removed, KvRemoved) and removed.block_hashes == [a[1]]
    assert isinstance(events[-1].data, KvStored)
    assert kv.cached_prefix(a) == 1 and kv.cached_prefix(b) == 2
    ld, d = blocks(list(range(300, 312)))  # 3 new blocks: evicts a[0], b[1], b[0]
    assert kv.acquire(d, ld)
    evicted = [h for e in events if isinstance(e.data, KvRemoved) for h in e.data.block_hashes]
    assert evicted == [a[1], a[0], b[1], b[0]]
    assert kv.num_evictions == 4
    ids = [e.event_id for e in events]
    assert ids == list(range(1, len(events) + 1))


def test_capacity_limits_and_refusal():
    kv, _ = make(capacity=3)
    la, a = blocks(list(range(8)))
    kv.acquire(a, la)
    assert kv.alloc_partial()
    assert kv.num_free_blocks == 0
    assert not kv.alloc_partial()
    lb, b = blocks(list(range(50, 54)))
    assert not kv.acquire(b, lb)  # refused, nothing changed
    assert kv.num_active_blocks == 3
    kv.free_partial()
    kv.release(a)
    assert kv.num_active_blocks == 0 and kv.num_free_blocks == 3


def test_promote_partial_to_full_block():
    kv, events = make()
    tokens = list(range(6))  # one full block + partial
    local, seqs = blocks(tokens)
    kv.acquire(seqs, local)
    kv.alloc_partial()
    tokens += [6, 7]  # the tail fills up during decode
    tail_local = block_hashes(tokens[4:8], BS)[0]
    tail = chain_hash(seqs[0], tail_local)
    assert tail == blocks(tokens)[1][1]
    kv.promote(seqs[0], tail, tail_local)
    assert kv.num_active_blocks == 2
    stored = events[-1].data
    assert stored.parent_hash == seqs[0]
    assert stored.blocks[0].block_hash == tail and stored.blocks[0].tokens_hash == tail_local
    # The same block promoted by another sequence is deduplicated: no new event.
    kv.alloc_partial()
    kv.promote(seqs[0], tail, tail_local)
    assert kv.num_active_blocks == 2 and len(events) == 2


def test_non_contiguous_new_blocks_get_their_own_parent():
    kv, events = make(capacity=8)
    local, seqs = blocks(list(range(12)))
    kv.acquire(seqs[1:2], local[1:2])  # only the middle block is cached
    events.clear()
    kv.acquire(seqs, local)
    stored = [e.data for e in events]
    assert [s.parent_hash for s in stored] == [None, seqs[1]]
    assert [len(s.blocks) for s in stored] == [1, 1]


def test_prefix_caching_off_reuses_nothing_and_is_silent():
    kv, events = make(caching=False)
    local, seqs = blocks(list(range(8)))
    kv.acquire(seqs, local)
    assert kv.cached_prefix(seqs) == 0 and kv.blocks_to_activate(seqs) == 2
    kv.acquire(seqs, local)
    assert kv.num_active_blocks == 4
    kv.release(seqs)
    kv.release(seqs)
    assert kv.num_active_blocks == 0 and kv.num_cached_blocks == 0
    assert events == []


def test_clear():
    kv, events = make()
    local, seqs = blocks(list(range(8)))
    kv.acquire(seqs, local)
    with pytest.raises(RuntimeError):
        kv.clear()
    kv.release(seqs)
    kv.clear()
    assert isinstance(events[-1].data, KvCleared) and kv.num_cached_blocks == 0
    assert kv.cached_prefix(seqs) == 0

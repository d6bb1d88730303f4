"""Radix-tree indexer: store/remove/clear, parent lookups, gaps, resync, matches."""

from dynamo.router.indexer import KvIndexer
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvCleared, KvRemoved, KvStored, RouterEvent, StoredBlock


def stored(worker, event_id, locals_, parent=None, dp=0, ext=None, tier="device"):
    ext = ext or [1000 * worker + 100 * dp + h for h in locals_]
    blocks = [StoredBlock(block_hash=e, tokens_hash=h) for e, h in zip(ext, locals_)]
    data = KvStored(parent_hash=parent, blocks=blocks)
    return RouterEvent(worker_id=worker, event=KvCacheEvent(event_id=event_id, data=data, dp_rank=dp),
                       storage_tier=tier)


def removed(worker, event_id, ext, dp=0, tier="device"):
    return RouterEvent(worker_id=worker, event=KvCacheEvent(event_id=event_id, data=KvRemoved(block_hashes=ext),
                                                            dp_rank=dp), storage_tier=tier)


def cleared(worker, event_id, dp=0):
    return RouterEvent(worker_id=worker, event=KvCacheEvent(event_id=event_id, data=KvCleared(), dp_rank=dp))


def test_store_and_match_several_workers_and_ranks():
    idx = KvIndexer()
    assert idx.apply_event(stored(1, 0, [1, 2, 3, 4])) == "ok"
    assert idx.apply_event(stored(2, 0, [1, 2])) == "ok"
    assert idx.apply_event(stored(2, 0, [1, 2, 3], dp=1)) == "ok"
    assert idx.apply_event(stored(3, 0, [9])) == "ok"
    m = idx.find_matches([1, 2, 3, 4, 5])
    assert m.scores == {(1, 0): 4, (2, 0): 2, (2, 1): 3}
    assert m.tree_sizes == {(1, 0): 4, (2, 0): 2, (2, 1): 3}
    assert idx.find_matches([9, 1]).scores == {(3, 0): 1}
    assert idx.find_matches([5]).scores == {}
    assert idx.find_matches([]).scores == {}


def test_store_with_parent_continues_chain():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2], ext=[11, 12]))
    assert idx.apply_event(stored(1, 1, [3, 4], parent=12, ext=[13, 14])) == "ok"
    assert idx.find_matches([1, 2, 3, 4]).scores == {(1, 0): 4}


def test_parent_not_found_drops_event_and_flags_resync():
    idx = KvIndexer()
    assert idx.apply_event(stored(1, 0, [3, 4], parent=999)) == "parent_not_found"
    assert idx.find_matches([3, 4]).scores == {}
    assert (1, 0) in idx.workers_needing_resync
    assert idx.counts[("stored", "parent_not_found")] == 1


def test_worker_missing_in_middle_scores_only_leading_blocks():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2, 3], ext=[11, 12, 13]))
    idx.apply_event(stored(2, 0, [1, 2, 3], ext=[21, 22, 23]))
    idx.apply_event(removed(1, 1, [12]))  # worker 1 lost block 2 but kept block 3
    assert idx.find_matches([1, 2, 3]).scores == {(1, 0): 1, (2, 0): 3}


def test_remove_prunes_empty_nodes():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2, 3], ext=[11, 12, 13]))
    assert idx.tree.node_count == 3
    assert idx.apply_event(removed(1, 1, [13, 12])) == "ok"
    assert idx.tree.node_count == 1
    assert idx.find_matches([1, 2]).scores == {(1, 0): 1}
    assert idx.apply_event(removed(1, 2, [77])) == "block_not_found"
    idx.apply_event(removed(1, 3, [11]))
    assert idx.tree.node_count == 0 and idx.tree.root.children == {}


def test_shared_nodes_survive_other_workers_removal():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2]))
    idx.apply_event(stored(2, 0, [1, 2]))
    assert idx.tree.node_count == 2
    idx.apply_event(cleared(1, 1))
    assert idx.tree.node_count == 2
    assert idx.find_matches([1, 2]).scores == {(2, 0): 2}
    assert idx.tree.tree_size((1, 0)) == 0


def test_cleared_drops_only_that_rank():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2], dp=0))
    idx.apply_event(stored(1, 0, [1, 2], dp=1))
    idx.apply_event(cleared(1, 1, dp=0))
    assert idx.find_matches([1, 2]).scores == {(1, 1): 2}


def test_remove_worker_all_ranks_and_slot_reuse():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2], dp=0))
    idx.apply_event(stored(1, 0, [1, 2, 3], dp=1))
    idx.apply_event(stored(2, 0, [1]))
    idx.remove_worker(1)
    assert idx.find_matches([1, 2, 3]).scores == {(2, 0): 1}
    assert idx.tree.node_count == 1
    idx.apply_event(stored(5, 0, [1, 2]))  # recycled slot must start empty
    assert idx.find_matches([1, 2, 3]).scores == {(2, 0): 1, (5, 0): 2}
    assert idx.last_event_id(1) is None


def test_gap_detection_applies_and_flags():
    idx = KvIndexer()
    assert idx.apply_event(stored(1, 5, [1], ext=[11])) == "ok"  # first event sets the baseline
    assert idx.apply_event(stored(1, 6, [2], parent=11, ext=[12])) == "ok"
    assert idx.apply_event(stored(1, 6, [3], parent=12, ext=[13])) == "ok"  # same batch id: no gap
    assert idx.apply_event(stored(1, 9, [4], parent=13, ext=[14])) == "gap"
    assert idx.find_matches([1, 2, 3, 4]).scores == {(1, 0): 4}
    assert idx.workers_needing_resync == {(1, 0)}
    assert idx.counts[("stored", "gap")] == 1
    assert idx.last_event_id(1) == 9


def test_resync_replaces_state_order_tolerant():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2, 3], ext=[11, 12, 13]))
    idx.apply_event(stored(1, 4, [8], parent=99))  # lost state
    assert (1, 0) in idx.workers_needing_resync
    dump = [
        KvCacheEvent(event_id=20, data=KvStored(parent_hash=51, blocks=[StoredBlock(block_hash=52, tokens_hash=6)])),
        KvCacheEvent(event_id=19, data=KvStored(parent_hash=None, blocks=[StoredBlock(block_hash=51, tokens_hash=5)])),
    ]
    assert idx.resync_worker(1, 0, dump) == 0
    assert idx.find_matches([1, 2]).scores == {}
    assert idx.find_matches([5, 6]).scores == {(1, 0): 2}
    assert idx.workers_needing_resync == set()
    assert idx.last_event_id(1) == 20
    assert idx.apply_event(stored(1, 21, [7], parent=52, ext=[53])) == "ok"


def test_early_exit_stops_with_single_worker():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1, 2, 3, 4]))
    idx.apply_event(stored(2, 0, [1]))
    assert idx.find_matches([1, 2, 3, 4], early_exit=True).scores == {(2, 0): 1, (1, 0): 2}
    assert idx.find_matches([1, 2, 3, 4]).scores == {(2, 0): 1, (1, 0): 4}


def test_offloaded_tiers_are_indexed_apart_from_the_device_tier():
    idx = KvIndexer()
    assert idx.apply_event(stored(1, 0, [1, 2, 3], tier="host_pinned")) == "ok"
    assert idx.apply_event(stored(2, 0, [1, 2, 3, 4], tier="disk")) == "ok"
    assert idx.apply_event(stored(1, 1, [1])) == "ok"
    assert idx.find_matches([1, 2, 3, 4]).scores == {(1, 0): 1}  # the device tier alone
    assert idx.lower_tier_matches([1, 2, 3, 4]) == {"host_pinned": {(1, 0): 3}, "disk": {(2, 0): 4}}
    assert list(idx.lower) == ["host_pinned", "disk"]  # fastest first, whatever came first
    assert idx.apply_event(removed(1, 2, [1002, 1003], tier="host_pinned")) == "ok"
    assert idx.lower_tier_matches([1, 2, 3])["host_pinned"] == {(1, 0): 1}
    idx.remove_worker(2)
    assert idx.lower_tier_matches([1, 2, 3, 4])["disk"] == {}
    assert idx.apply_event(stored(3, 0, [1], tier="external")) == "unsupported_tier"  # nobody's cache to reuse


def test_one_event_sequence_per_worker_across_tiers():
    """vLLM numbers its event batches once for all media: a batch of host-tier events between two
    device batches is not a gap in the device tier's events."""
    idx = KvIndexer()
    assert idx.apply_event(stored(1, 0, [1])) == "ok"
    assert idx.apply_event(stored(1, 1, [1], tier="host_pinned")) == "ok"
    assert idx.apply_event(stored(1, 2, [2], parent=1001)) == "ok"
    assert not idx.workers_needing_resync
    assert idx.apply_event(stored(1, 4, [3], tier="host_pinned", parent=7)) == "gap"
    assert idx.workers_needing_resync == {(1, 0)}  # a lost batch may have held device events


def test_external_hash_reused_for_new_content_moves_block():
    idx = KvIndexer()
    idx.apply_event(stored(1, 0, [1], ext=[11]))
    idx.apply_event(stored(1, 1, [2], ext=[11]))
    assert idx.find_matches([1]).scores == {}
    assert idx.find_matches([2]).scores == {(1, 0): 1}
    assert idx.tree.node_count == 1


def test_many_workers_bitmask():
    idx = KvIndexer()
    for w in range(200):
        idx.apply_event(stored(w, 0, list(range(1, 2 + w % 10))))
    scores = idx.find_matches(list(range(1, 12))).scores
    assert len(scores) == 200
    assert all(scores[(w, 0)] == 1 + w % 10 for w in range(200))


def test_randomized_against_brute_force_model():
    import random

    rng = random.Random(11)
    idx = KvIndexer()
    held: dict[tuple[int, int], dict[int, tuple]] = {}  # key -> {ext: path}
    ext_of = lambda key, path: hash((key, path)) & (2**63 - 1)  # noqa: E731
    for step in range(3000):
        key = (rng.randrange(5), rng.randrange(2))
        op = rng.random()
        if op < 0.6:
            path = tuple(rng.randrange(3) for _ in range(rng.randint(1, 6)))
            cut = rng.randint(0, len(path) - 1)  # store the tail under the (maybe unknown) parent
            parent = ext_of(key, path[:cut]) if cut else None
            known = parent is None or parent in held.get(key, {})
            event = stored(key[0], step, list(path[cut:]), parent=parent, dp=key[1],
                           ext=[ext_of(key, path[:i]) for i in range(cut + 1, len(path) + 1)])
            idx.apply_event(event)
            if known:
                held.setdefault(key, {}).update({ext_of(key, path[:i]): path[:i] for i in range(cut + 1, len(path) + 1)})
        elif op < 0.95:
            mine = list(held.get(key, {}))
            gone = rng.sample(mine, min(len(mine), rng.randint(1, 3)))
            idx.apply_event(removed(key[0], step, gone, dp=key[1]))
            for e in gone:
                del held[key][e]
        else:
            idx.apply_event(cleared(key[0], step, dp=key[1]))
            held[key] = {}
        query = [rng.randrange(3) for _ in range(6)]
        expect = {}
        for k, blocks in held.items():
            paths = set(blocks.values())
            depth = 0
            while depth < len(query) and tuple(query[: depth + 1]) in paths:
                depth += 1
            if depth:
                expect[k] = depth
        assert idx.find_matches(query).scores == expect, step
        assert all(idx.tree.tree_size(k) == len(v) for k, v in held.items())

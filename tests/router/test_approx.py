"""Approximate indexer: TTL expiry, refresh, size-bounded pruning."""

from dynamo.router.approx import ApproxIndexer
from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def hashes(tokens, bs=4):
    local = block_hashes(tokens, bs)
    return local, sequence_hashes(local)


def test_record_and_match_then_expire():
    clock = Clock()
    ax = ApproxIndexer(ttl_secs=120, clock=clock)
    local, seq = hashes(list(range(16)))
    ax.record((1, 0), local, seq)
    ax.record((2, 0), local[:2], seq[:2])
    assert ax.find_matches(local).scores == {(1, 0): 4, (2, 0): 2}
    clock.now += 119.9
    assert ax.find_matches(local).scores == {(1, 0): 4, (2, 0): 2}
    clock.now += 0.2
    assert ax.find_matches(local).scores == {}
    assert ax.tree.node_count == 0
    assert ax.expired_blocks == 6


def test_refresh_extends_ttl():
    clock = Clock()
    ax = ApproxIndexer(ttl_secs=10, clock=clock)
    local, seq = hashes(list(range(8)))
    ax.record((1, 0), local, seq)
    clock.now += 8
    ax.record((1, 0), local[:1], seq[:1])  # only the first block is refreshed
    clock.now += 5
    assert ax.find_matches(local).scores == {(1, 0): 1}
    clock.now += 10
    assert ax.find_matches(local).scores == {}


def test_size_bound_prunes_oldest():
    clock = Clock()
    ax = ApproxIndexer(ttl_secs=1000, max_tree_size=10, prune_target_ratio=0.5, clock=clock)
    prompts = [hashes([p] * 16) for p in range(4)]  # 4 disjoint prompts x 4 blocks
    for i, (local, seq) in enumerate(prompts[:3]):
        clock.now += 1
        ax.record((i, 0), local, seq)
    # the third prompt makes 12 nodes > 10: oldest entries go until <= 5 nodes (12 -> 8 -> 4)
    assert ax.tree.node_count == 4
    assert ax.find_matches(prompts[0][0]).scores == {}
    assert ax.find_matches(prompts[2][0]).scores == {(2, 0): 4}
    assert ax.pruned_blocks == 8


def test_remove_worker():
    ax = ApproxIndexer(clock=Clock())
    local, seq = hashes(list(range(8)))
    ax.record((1, 0), local, seq)
    ax.record((1, 1), local, seq)
    ax.record((2, 0), local, seq)
    ax.remove_worker(1)
    assert ax.find_matches(local).scores == {(2, 0): 2}

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


# -- lru: each rank keeps as many blocks as its cache holds --------------------------------------
def prompt(i: int, blocks: int = 4):
    return hashes([10_000 * i + t for t in range(4 * blocks)])


def test_lru_keeps_a_rank_within_its_capacity_least_recent_out_first():
    clock = Clock()
    ax = ApproxIndexer(ttl_secs=1, clock=clock, capacity=lambda key: 8)  # two 4-block prompts per rank
    a, b, c = prompt(1), prompt(2), prompt(3)
    ax.record((1, 0), *a)
    ax.record((1, 0), *b)
    ax.record((1, 0), *a)  # a is used again: b is now the least recent
    ax.record((1, 0), *c)
    clock.now += 3600  # no TTL under lru
    assert ax.find_matches(a[0]).scores == {(1, 0): 4} and ax.find_matches(c[0]).scores == {(1, 0): 4}
    assert ax.find_matches(b[0]).scores == {} and ax.evicted_blocks == 4


def test_lru_capacity_is_per_rank():
    ax = ApproxIndexer(capacity=lambda key: 4 if key == (1, 0) else 100)
    for i in range(3):
        ax.record((1, 0), *prompt(i))
        ax.record((2, 0), *prompt(i))
    assert [ax.find_matches(prompt(i)[0]).scores.get((1, 0), 0) for i in range(3)] == [0, 0, 4]
    assert [ax.find_matches(prompt(i)[0]).scores.get((2, 0), 0) for i in range(3)] == [4, 4, 4]


def test_lru_falls_back_to_the_ttl_until_the_capacity_is_known():
    clock = Clock()
    ax = ApproxIndexer(ttl_secs=10, clock=clock, capacity=lambda key: None)
    ax.record((1, 0), *prompt(1))
    clock.now += 11
    assert ax.find_matches(prompt(1)[0]).scores == {} and ax.expired_blocks == 4


def test_lru_compacts_the_entries_that_refreshes_left_behind():
    ax = ApproxIndexer(capacity=lambda key: 1000)
    a = prompt(1)
    for _ in range(500):
        ax.record((1, 0), *a)
    assert len(ax._lru[(1, 0)]) <= 2 * 4 + 64 + 1 and ax.find_matches(a[0]).scores == {(1, 0): 4}


def test_a_router_in_lru_mode_forgets_what_a_full_worker_evicted():
    from tests.router.test_kv_router import make

    r = make(use_kv_events=False, router_approximate_cache_policy="lru")
    r.add_worker(1, total_kv_blocks=8)  # two 16-token prompts of 4 blocks
    for i in range(3):
        tokens = [1000 * i + t for t in range(16)]
        r.add_request(str(i), r.select(tokens, request_id=str(i)), tokens)
    assert r.overlap_scores([t for t in range(16)]) == {}  # prompt 0, the least recent, is gone
    assert r.overlap_scores([2000 + t for t in range(16)]) == {(1, 0): 4}
    assert r.stats()["approx"]["evicted_blocks"] == 4

"""Load bookkeeping: shared prefixes counted once, prefill release, idempotent free."""

import pytest

from dynamo.router.active_sequences import ActiveSequences

W = (1, 0)


def test_shared_prefix_counted_once():
    act = ActiveSequences(block_size=4)
    act.add_request(W, "a", [10, 11, 12], isl=12, overlap_blocks=0)
    act.add_request(W, "b", [10, 11, 13, 14], isl=16, overlap_blocks=2)
    assert act.active_blocks(W) == 5
    assert act.active_prefill_tokens(W) == 12 + (16 - 8)
    act.free("a")
    assert act.active_blocks(W) == 4
    act.free("b")
    assert act.active_blocks(W) == 0 and act.active_prefill_tokens(W) == 0


def test_prefill_release_and_free_idempotent():
    act = ActiveSequences(block_size=4)
    act.add_request(W, "a", [1, 2], isl=10, overlap_blocks=5)  # overlap beyond isl: clamp to 0
    assert act.active_prefill_tokens(W) == 0
    act.add_request(W, "b", [1, 2, 3], isl=13, overlap_blocks=1)
    assert act.active_prefill_tokens(W) == 9
    assert act.mark_prefill_completed("b") is True
    assert act.mark_prefill_completed("b") is False
    assert act.active_prefill_tokens(W) == 0
    assert act.active_blocks(W) == 3
    assert act.free("b") is True
    assert act.free("b") is False
    assert act.free("never") is False
    assert act.active_blocks(W) == 2
    assert len(act) == 1


def test_duplicate_request_id_rejected():
    act = ActiveSequences(block_size=4)
    act.add_request(W, "a", [1], isl=4, overlap_blocks=0)
    with pytest.raises(ValueError):
        act.add_request((2, 0), "a", [1], isl=4, overlap_blocks=0)


def test_potential_projections_do_not_book():
    act = ActiveSequences(block_size=4)
    act.add_worker((2, 0))
    act.add_request(W, "a", [1, 2, 3, 4], isl=16, overlap_blocks=0)
    pot = act.potential_blocks_and_tokens([1, 2, 7, 8, 9], isl=20, overlaps={W: 2})
    assert pot[W] == (4 + 3, 16 + 12)
    assert pot[(2, 0)] == (5, 20)
    assert act.active_blocks(W) == 4 and len(act) == 1
    assert act.potential_blocks_and_tokens([1, 2, 3, 4], 16, {})[W] == (4, 32)
    assert act.potential_blocks_and_tokens([9], 4, {})[W] == (5, 20)


@pytest.mark.parametrize("n_active", range(0, 9))
def test_new_blocks_binary_search_matches_linear(n_active):
    act = ActiveSequences(block_size=1)
    act.add_worker(W)
    seq = list(range(100, 108))
    if n_active:
        act.add_request(W, "x", seq[:n_active], isl=n_active, overlap_blocks=0)
        act.add_request(W, "y", seq[: n_active // 2] + [1, 2], isl=n_active, overlap_blocks=0)
    load = act._workers[W]
    assert load.new_blocks(seq) == sum(1 for s in seq if s not in load.block_refs) == 8 - n_active


def test_no_kv_reuse_counts_every_block():
    act = ActiveSequences(block_size=4, assume_kv_reuse=False)
    act.add_request(W, "a", [1, 2], isl=8, overlap_blocks=0)
    act.add_request(W, "b", [1, 2], isl=8, overlap_blocks=0)
    assert act.active_blocks(W) == 4
    assert act.potential_blocks_and_tokens([1, 2], 8, {})[W][0] == 6
    act.free("a")
    assert act.active_blocks(W) == 2


def test_tracking_switches():
    act = ActiveSequences(block_size=4, track_active_blocks=False, track_prefill_tokens=False)
    act.add_request(W, "a", [1, 2], isl=8, overlap_blocks=0)
    assert act.active_blocks(W) == 0 and act.active_prefill_tokens(W) == 0


def test_remove_worker_sets_its_running_requests_aside():
    act = ActiveSequences(block_size=4)
    act.add_request((1, 0), "a", [1], isl=4, overlap_blocks=0)
    act.add_request((1, 1), "b", [1], isl=4, overlap_blocks=0)
    act.add_request((2, 0), "c", [1], isl=4, overlap_blocks=0)
    assert sorted(act.remove_worker(1)) == ["a", "b"]
    assert act.workers() == [(2, 0)]
    assert act.loads() == {(2, 0): {"active_blocks": 1, "active_prefill_tokens": 4, "requests": 1}}
    assert act.free("a") is True  # still running on the worker that left: its booking ends with it
    assert act.free("a") is False
    assert len(act) == 2


def test_a_worker_that_rejoins_keeps_the_load_of_requests_still_running():
    act = ActiveSequences(block_size=4)
    act.add_worker((1, 0))
    act.add_request((1, 0), "a", [1, 2], isl=8, overlap_blocks=0)
    act.add_request((1, 0), "b", [3], isl=4, overlap_blocks=0)
    act.remove_worker(1)
    act.mark_prefill_completed("a")  # its first token, while out of discovery
    act.free("b")
    act.add_worker((1, 0))  # back (a canary passed again): still busy with "a"
    assert act.loads() == {(1, 0): {"active_blocks": 2, "active_prefill_tokens": 0, "requests": 1}}
    act.free("a")
    assert act.loads() == {(1, 0): {"active_blocks": 0, "active_prefill_tokens": 0, "requests": 0}}


def test_a_worker_that_left_is_forgotten_once_its_requests_end():
    act = ActiveSequences(block_size=4)
    act.add_request((1, 0), "a", [1], isl=4, overlap_blocks=0)
    act.remove_worker(1)
    act.free("a")
    assert act.remove_worker(1) == [] and act.ledger.loads == {}
    act.add_worker((1, 0))  # a rejoin after that starts idle
    assert act.loads() == {(1, 0): {"active_blocks": 0, "active_prefill_tokens": 0, "requests": 0}}


def test_sharers_count_decoding_requests_on_every_worker():
    seqs = ActiveSequences(block_size=4)
    seqs.add_request((1, 0), "a", [10, 11, 12], isl=12, overlap_blocks=0)
    seqs.add_request((2, 0), "b", [10, 11, 99], isl=12, overlap_blocks=0)
    assert seqs.sharers(10) == 0  # still prefilling: not yet a decode load
    assert (seqs.holders(10), seqs.holders(12), seqs.holders(99)) == (2, 1, 1)  # holders count from booking
    seqs.mark_prefill_completed("a")
    seqs.mark_prefill_completed("b")
    seqs.mark_prefill_completed("b")  # counted once
    assert (seqs.sharers(10), seqs.sharers(12), seqs.sharers(99)) == (2, 1, 1)
    seqs.free("a")
    assert (seqs.sharers(10), seqs.sharers(12)) == (1, 0) == (seqs.holders(10), seqs.holders(12))
    seqs.remove_worker(2)  # "b" still runs there: its blocks stay shared until it ends
    assert seqs.sharers(10) == 1 and seqs.sharers(99) == 1
    seqs.free("b")
    assert seqs.sharers(10) == 0 and seqs.sharers(99) == 0 and seqs.holders(10) == 0

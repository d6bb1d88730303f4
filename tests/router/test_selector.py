"""Cost function, argmin tie-breaking, temperature sampling, busy thresholds."""

import math
import random
from collections import Counter

import pytest

from dynamo.router.selector import (
    BusyThresholds,
    NoWorkers,
    Selector,
    WorkerCapacity,
    compute_logits,
    is_busy,
)

W1, W2, W3 = (1, 0), (2, 0), (3, 0)


def test_dynamo_worked_example():
    # (potential decode blocks, potential prefill tokens) with block_size 16:
    # prefill blocks W1 8, W2 5, W3 2; decode blocks W1 10, W2 5, W3 9
    potentials = {W1: (10, 8 * 16), W2: (5, 5 * 16), W3: (9, 2 * 16)}
    logits = compute_logits(potentials, 16, 1.0)
    assert logits == {W1: 18.0, W2: 10.0, W3: 11.0}
    assert Selector(random.Random(0)).select(logits) == W2


def test_overlap_weight_scales_prefill_only():
    logits = compute_logits({W1: (10, 32)}, 16, 0.5)
    assert logits[W1] == 10 + 0.5 * 2
    assert compute_logits({W1: (10, 32)}, 16, 0.0)[W1] == 10


def test_argmin_ties_prefer_smaller_tree_then_random():
    sel = Selector(random.Random(1))
    logits = {W1: 3.0, W2: 3.0, W3: 3.0}
    assert sel.select(logits, 0.0, {W1: 5, W2: 1, W3: 5}) == W2
    assert sel.select(logits, 0.0, lambda k: {W1: 5, W2: 9, W3: 5}[k]) in (W1, W3)
    picks = Counter(sel.select(logits, 0.0, {}) for _ in range(600))
    assert set(picks) == {W1, W2, W3}
    assert min(picks.values()) > 120


def test_temperature_sampling_distribution():
    sel = Selector(random.Random(42))
    logits = {W1: 0.0, W2: 5.0, W3: 10.0}  # normalized 0, 0.5, 1
    t = 0.5
    weights = [math.exp(-x / t) for x in (0.0, 0.5, 1.0)]
    expected = [w / sum(weights) for w in weights]
    n = 20000
    picks = Counter(sel.select(logits, t) for _ in range(n))
    for key, p in zip((W1, W2, W3), expected):
        assert abs(picks[key] / n - p) < 0.02


def test_temperature_all_equal_is_uniform():
    sel = Selector(random.Random(3))
    picks = Counter(sel.select({W1: 7.0, W2: 7.0}, 1.0) for _ in range(4000))
    assert abs(picks[W1] / 4000 - 0.5) < 0.05


def test_no_workers():
    with pytest.raises(NoWorkers):
        Selector().select({})


def test_busy_thresholds():
    cap = WorkerCapacity(total_kv_blocks=100, max_num_batched_tokens=1000)
    off = BusyThresholds()
    assert not off.enabled and not is_busy(100, 10**6, cap, off)
    decode = BusyThresholds(active_decode_blocks=0.8)
    assert is_busy(81, 0, cap, decode) and not is_busy(80, 0, cap, decode)
    assert not is_busy(81, 0, WorkerCapacity(), decode)  # unknown capacity: never busy
    tokens = BusyThresholds(active_prefill_tokens=500)
    assert is_busy(0, 501, cap, tokens) and not is_busy(0, 500, cap, tokens)
    frac = BusyThresholds(active_prefill_tokens_frac=1.5)
    assert is_busy(0, 1501, cap, frac) and not is_busy(0, 1500, cap, frac)

"""Offloaded-tier credit: a block counts once, at the fastest tier holding it, weighted by that tier."""

from dynamo.router.tier_credit import tiered_overlaps

WEIGHTS = {"host_pinned": 0.75, "disk": 0.25}


def test_a_block_counts_once_at_the_fastest_tier_that_holds_it():
    a, b, c, d = (1, 0), (2, 0), (3, 0), (4, 0)
    device = {a: 4, b: 10}
    lower = {"host_pinned": {a: 8, b: 6, c: 4}, "disk": {a: 12, c: 2, d: 8}}
    out = tiered_overlaps(device, lower, WEIGHTS)
    assert out[a] == round(4 + 0.75 * 4 + 0.25 * 4)  # 4 device, 4 more on host, 4 more on disk
    assert out[b] == 10  # the device already holds more than the host: nothing added
    assert out[c] == 3  # 0.75 * 4; the disk's 2 are already counted on the host
    assert out[d] == 2  # 0.25 * 8
    assert tiered_overlaps(device, {}, WEIGHTS) == device

"""Cache credit for offloaded KV tiers (NVIDIA Dynamo's `--router-host-cache-hit-weight` and
`--router-disk-cache-hit-weight`): a prefix a worker holds in host memory or on disk, beyond what
its device cache holds, is copied back rather than recomputed, so it counts as a fraction of a
device hit. The credit is in prompt blocks, what the router's prefill estimate takes."""

from __future__ import annotations

from typing import Mapping

WorkerKey = tuple[int, int]


def tiered_overlaps(device: Mapping[WorkerKey, int], lower: Mapping[str, Mapping[WorkerKey, int]],
                    weights: Mapping[str, float]) -> dict[WorkerKey, int]:
    """Each worker's cached prompt blocks, counting the blocks that only a lower tier holds at that
    tier's weight: a block counts once, at the fastest tier that has it (tiers are prefix depths
    from the prompt's start, walked fastest first)."""
    out = dict(device)
    for key in {k for depths in lower.values() for k in depths}:
        reached = device.get(key, 0)
        credit = float(reached)
        for tier, depths in lower.items():
            depth = depths.get(key, 0)
            if depth > reached:
                credit += weights.get(tier, 0.0) * (depth - reached)
                reached = depth
        out[key] = int(credit + 0.5)
    return out

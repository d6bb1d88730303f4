"""What one KV routing decision returns: the chosen worker, what the router predicted of it,
and how long each phase of the decision took (Dynamo's `dynamo_router_overhead_*_ms`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from dynamo.router.indexer import WorkerKey


class RoutingOverhead(NamedTuple):
    """Seconds spent in each phase of one decision. A prompt hashed for this request before (a
    `query`, or a selection that queued) is not hashed again, so its hashing phases read 0."""

    block_hashing: float
    seq_hashing: float
    find_matches: float
    scheduling: float  # everything after the index lookup: load, cost, choice
    total: float


@dataclass
class Selection:
    worker_id: int
    dp_rank: int
    overlap_blocks: int
    required_blocks: int  # ceil(isl / block_size): blocks the request needs in total
    logits: dict[WorkerKey, float] = field(default_factory=dict)
    features: tuple[float, ...] | None = None  # the ttft model's view of the chosen worker
    prefill_tokens: int | None = None  # its own new prefill there, when in-flight prefixes were credited
    overhead: RoutingOverhead | None = None
    best_overlap_blocks: int = 0  # the most device-cached blocks any eligible candidate held

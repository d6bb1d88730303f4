"""NVIDIA Dynamo 1.6.1's linear worker cost with its tuning knobs, for `--router-cost-model dynamo`
and for any deployment that sets one of the knobs (a manifest tuned for Dynamo's router keeps its
meaning here). Per candidate worker w, lower is better:

    credit_w  = overlap_score_credit / (1 + overlap_score_credit_decay * excess_w)
    prefill_w = max(queued prefill_w + prompt - credit_w * cached prefix_w, 0)        (tokens)
    cost_w    = prefill_load_scale * overlap_score_weight * prefill_w / block_size
                + decode blocks_w + decode_active_request_weight * running requests_w

`excess_w` is w's queued prefill above the least-queued candidate's, in prompts of this request's
length (a decay of 1 halves the credit at one prompt's worth of excess: a cache-rich worker with
a backlog loses its pull). `overlap_score_weight` is the older `--kv-overlap-score-weight`; with
every knob at its default (credit 1, decay 0, scale 1, request weight 0) this is the classic
cost of `selector.compute_logits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

WorkerKey = tuple[int, int]


@dataclass(frozen=True)
class DynamoCostKnobs:
    overlap_score_credit: float = 1.0
    overlap_score_credit_decay: float = 0.0
    prefill_load_scale: float = 1.0
    decode_active_request_weight: float = 0.0

    @property
    def default(self) -> bool:
        return self == DynamoCostKnobs()

    @classmethod
    def of(cls, config) -> "DynamoCostKnobs":
        return cls(config.router_kv_overlap_score_credit, config.router_kv_overlap_score_credit_decay,
                   config.router_prefill_load_scale, config.router_decode_active_request_weight)


def dynamo_costs(
    potentials: Mapping[WorkerKey, tuple[int, int]],
    queued: Callable[[WorkerKey], int],
    requests: Callable[[WorkerKey], int],
    isl: int,
    block_size: int,
    knobs: DynamoCostKnobs,
    weight: float = 1.0,
    tracks_prefill: bool = True,
) -> dict[WorkerKey, float]:
    """`potentials[w] = (decode blocks after booking, queued + this request's new prefill tokens)`;
    `queued(w)`: prefill tokens already waiting on w; `requests(w)`: requests running there.
    Without prefill tracking (`--no-router-track-prefill-tokens`) the prefill term is 0, as in the
    classic cost."""
    queue = {key: queued(key) for key in potentials}
    least = min(queue.values(), default=0)
    scale = knobs.prefill_load_scale * weight
    costs = {}
    for key, (blocks, tokens) in potentials.items():
        ahead = queue[key]
        cached = max(isl - (tokens - ahead), 0)  # the prompt tokens this worker need not prefill
        credit = knobs.overlap_score_credit
        if knobs.overlap_score_credit_decay and ahead > least:
            credit /= 1.0 + knobs.overlap_score_credit_decay * (ahead - least) / max(isl, 1)
        prefill = max(ahead + isl - credit * cached, 0.0) if tracks_prefill else 0.0
        costs[key] = scale * prefill / block_size + blocks + knobs.decode_active_request_weight * requests(key)
    return costs

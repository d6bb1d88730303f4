"""Shared-prefix amortization (`--router-shared-prefix-amortization`): a worker's prefill of prompt
blocks that the best-placed worker already holds is priced as an investment shared by the
requests decoding from them, so that a prefix in wide use is copied to a worker with room
instead of all its traffic decoding on the one that holds it.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

from dynamo.router.active_sequences import ActiveSequences, WorkerKey


class PrefixShares:
    """Per prompt block held elsewhere, the share n/(n+1) of its prefill that n sharing requests
    amortize: decoding ones (`busy`), or every one holding it, still prefilling too (`idle`)."""

    def __init__(self, active: ActiveSequences, seq: Sequence[int]) -> None:
        self._active, self._seq = active, seq

    @functools.cached_property
    def busy(self) -> list[float]:
        return [n / (n + 1) for n in map(self._active.sharers, self._seq)]

    @functools.cached_property
    def idle(self) -> list[float]:
        return [n / (n + 1) for n in map(self._active.holders, self._seq)]


def amortized(active: ActiveSequences, block_size: int, potentials: Mapping[WorkerKey, tuple[int, int]],
              seq: Sequence[int], isl: int) -> Mapping[WorkerKey, tuple[int, int]]:
    """`potentials` with each worker's prefill of blocks it lacks that the best-placed worker holds
    priced as an investment: a block that n decoding requests hold costs 1/(n+1) of its prefill, so a
    prefix in wide use is copied to a worker with room rather than all its traffic decoding on one.
    Requests still prefilling count only for an idle worker: a burst joins the prefills under way
    (in-flight credit) once every worker has one, but it first starts one on each idle worker."""
    own = {k: tokens - active.active_prefill_tokens(k) for k, (_, tokens) in potentials.items()}
    least = min(own.values(), default=0)
    deepest = min((isl - least) // block_size, len(seq))  # full blocks the best-placed worker need not prefill
    if deepest <= 0 or all(v == least for v in own.values()):
        return potentials
    return _discounted(active, block_size, potentials, seq, isl, own, least, deepest)


def _discounted(active: ActiveSequences, bs: int, potentials: Mapping[WorkerKey, tuple[int, int]],
                seq: Sequence[int], isl: int, own: Mapping[WorkerKey, int], least: int,
                deepest: int) -> dict[WorkerKey, tuple[int, int]]:
    shares = PrefixShares(active, seq[:deepest])
    holder = max(active.requests(k) for k, v in own.items() if v == least)
    out = {}
    for key, (blocks, tokens) in potentials.items():
        held = max((isl - own[key]) // bs, 0)  # full blocks this worker need not prefill
        # Copying pays only by the load it takes off the holder: none between balanced workers, whose
        # caches would only trade what they hold.
        relief = max(holder - active.requests(key), 0) / holder if holder else 0.0
        # An idle worker starts a cold prefill at once, while a request joining the holder's prefill
        # under way waits for that step and then its own.
        share = shares.busy if active.requests(key) else shares.idle
        discount = int(bs * relief * sum(share[held:deepest])) if held < deepest else 0
        out[key] = (blocks, tokens - min(discount, own[key] - least))
    return out

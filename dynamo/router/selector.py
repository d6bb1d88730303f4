"""Worker selection: Dynamo's classic cost function, busy filtering and sampling.

Per (worker, dp_rank), lower is better:
    prefill_blocks = potential_prefill_tokens / block_size
    decode_blocks  = potential_active_blocks
    logit          = overlap_score_weight * prefill_blocks + decode_blocks
Temperature 0 picks the argmin (ties: smaller cached tree, then random); temperature > 0
samples with p ~ exp(-normalized_logit / T), logits normalized to [0, 1].
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

WorkerKey = tuple[int, int]
TreeSizes = Union[Mapping[WorkerKey, int], Callable[[WorkerKey], int]]


class NoWorkers(RuntimeError):
    """No worker is registered (or allowed) for this request."""


class AllWorkersBusy(RuntimeError):
    """Every candidate is above a busy threshold (HTTP 503 in the frontend)."""


class WorkerHintRequired(ValueError):
    """The policy routes only requests that name their worker, and this one does not (HTTP 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class WorkerCapacity:
    total_kv_blocks: int | None = None
    max_num_batched_tokens: int | None = None


@dataclass
class BusyThresholds:
    active_decode_blocks: float | None = None  # fraction of total KV blocks
    active_prefill_tokens: int | None = None
    active_prefill_tokens_frac: float | None = None  # fraction of max_num_batched_tokens

    @classmethod
    def of(cls, config) -> BusyThresholds:
        """The thresholds a router config (its `--active-*-threshold*` flags) sets."""
        return cls(config.active_decode_blocks_threshold, config.active_prefill_tokens_threshold,
                   config.active_prefill_tokens_threshold_frac)

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.active_decode_blocks, self.active_prefill_tokens,
                                           self.active_prefill_tokens_frac))

    def updated(self, update: BusyThresholds) -> BusyThresholds:
        """These thresholds with those `update` sets (not None) replaced, as Dynamo's runtime update
        does: a threshold left out keeps its value."""
        pick = lambda new, old: old if new is None else new  # noqa: E731
        return BusyThresholds(pick(update.active_decode_blocks, self.active_decode_blocks),
                              pick(update.active_prefill_tokens, self.active_prefill_tokens),
                              pick(update.active_prefill_tokens_frac, self.active_prefill_tokens_frac))

    def with_prefill(self, tokens: int | None, frac: float | None) -> BusyThresholds:
        """These thresholds with a router-queue class's prefill thresholds (`--router-queue-threshold`, or a
        `--router-policy-config` class's): the stricter of each applies, as a worker over either is busy."""
        stricter = lambda a, b: b if a is None else a if b is None else min(a, b)  # noqa: E731
        return BusyThresholds(self.active_decode_blocks, stricter(self.active_prefill_tokens, tokens),
                              stricter(self.active_prefill_tokens_frac, frac))

    def problem(self) -> tuple[str, str] | None:
        """(field, what is wrong) for a value no worker load could be measured against; None if all are sound."""
        decode, tokens, frac = self.active_decode_blocks, self.active_prefill_tokens, self.active_prefill_tokens_frac
        if decode is not None and not 0.0 <= decode <= 1.0:
            return "active_decode_blocks_threshold", "must be a fraction of the KV blocks, from 0 to 1"
        if tokens is not None and tokens < 0:
            return "active_prefill_tokens_threshold", "must be a token count >= 0"
        if frac is not None and not 0.0 <= frac < float("inf"):
            return "active_prefill_tokens_threshold_frac", "must be a finite fraction of max_num_batched_tokens >= 0"
        return None


def is_busy(active_blocks: int, prefill_tokens: int, capacity: WorkerCapacity | None, t: BusyThresholds) -> bool:
    total = capacity.total_kv_blocks if capacity else None
    if t.active_decode_blocks is not None and total and active_blocks / total > t.active_decode_blocks:
        return True
    if t.active_prefill_tokens is not None and prefill_tokens > t.active_prefill_tokens:
        return True
    batch = capacity.max_num_batched_tokens if capacity else None
    frac = t.active_prefill_tokens_frac
    return frac is not None and batch is not None and prefill_tokens > frac * batch


def compute_logits(
    potentials: Mapping[WorkerKey, tuple[int, int]], block_size: int, overlap_score_weight: float
) -> dict[WorkerKey, float]:
    """`potentials[key] = (potential_blocks, potential_prefill_tokens)` -> cost per worker."""
    return {
        key: overlap_score_weight * (tokens / block_size) + blocks for key, (blocks, tokens) in potentials.items()
    }


class Selector:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def select(
        self,
        logits: Mapping[WorkerKey, float],
        temperature: float = 0.0,
        tree_sizes: TreeSizes | None = None,
    ) -> WorkerKey:
        """`tree_sizes` (blocks cached per worker) breaks argmin ties; a mapping or a function."""
        if not logits:
            raise NoWorkers("no workers to select from")
        if temperature <= 0:
            return self._argmin(logits, tree_sizes or {})
        return self._sample(logits, temperature)

    def _argmin(self, logits: Mapping[WorkerKey, float], tree_sizes: TreeSizes) -> WorkerKey:
        best = min(logits.values())
        tied = [k for k, v in logits.items() if v == best]
        if len(tied) > 1:
            size = tree_sizes if callable(tree_sizes) else (lambda k: tree_sizes.get(k, 0))
            sizes = {k: size(k) for k in tied}
            smallest = min(sizes.values())
            tied = [k for k in tied if sizes[k] == smallest]
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)

    def _sample(self, logits: Mapping[WorkerKey, float], temperature: float) -> WorkerKey:
        keys: Sequence[WorkerKey] = list(logits)
        values = [logits[k] for k in keys]
        lo, hi = min(values), max(values)
        if hi == lo:
            return self.rng.choice(keys)
        span = hi - lo
        weights = [math.exp(-((v - lo) / span) / temperature) for v in values]
        return self.rng.choices(keys, weights=weights, k=1)[0]

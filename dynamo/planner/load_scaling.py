"""Reactive scaling on forward-pass metrics: targets `throughput`, `latency` and `load`
(Dynamo 1.6.1 `core/load_scaling.py`), one decision per pool per load tick.

Each engine (worker, dp_rank) yields one load value from its latest FPM:

| pool    | value                                                              |
|---------|--------------------------------------------------------------------|
| prefill | queued prefill tokens / context_length (`load`: absolute tokens)   |
| decode  | (scheduled + queued decode KV tokens) / max_kv_tokens              |
| agg     | decode value with queued prefill tokens added to the numerator     |

Scale up when any engine crosses the up threshold; scale down when every engine is
under the down threshold, unless spreading the busiest engine's load over one replica
fewer would cross the up threshold again (anti-flap).

Before any of it (every target, `sla` too) the FPMs must cover the pool: `fpm_coverage_gap`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, Iterable

from dynamo.llm.forward_pass import ForwardPassMetrics
from dynamo.planner.config import PlannerConfig


@dataclass(frozen=True)
class EngineLimits:
    """From the worker's model card (`runtime_config`), as Dynamo reads them from the MDC."""

    context_length: int
    max_kv_tokens: int
    max_num_batched_tokens: int
    max_num_seqs: int


@dataclass
class Decision:
    role: str  # "prefill" or "decode" (agg mode scales its single pool as "decode")
    current: int
    target: int
    reason: str
    estimate: dict[str, float] = field(default_factory=dict)  # target `sla`: worst engine's est TTFT/ITL (ms)

    @property
    def change(self) -> int:
        return self.target - self.current


@dataclass(frozen=True)
class Rule:
    up: float
    down: float
    up_cmp: Callable[[float, float], bool]
    down_cmp: Callable[[float, float], bool]


_GE, _GT, _LT, _LE = operator.ge, operator.gt, operator.lt, operator.le
# (target, pool kind) -> thresholds and their comparisons, as Dynamo 1.6.1.
RULES = {
    ("throughput", "prefill"): Rule(1.0, 0.1, _GE, _LT),
    ("throughput", "decode"): Rule(1.0, 0.6, _GT, _LT),
    ("latency", "prefill"): Rule(0.1, 0.0, _GE, _LE),
    ("latency", "decode"): Rule(0.4, 0.1, _GT, _LT),
}


def pool_kind(cfg: PlannerConfig, role: str) -> str:
    return "agg" if cfg.mode == "agg" else role


def rule_for(cfg: PlannerConfig, kind: str) -> Rule:
    base = "prefill" if kind == "prefill" else "decode"
    if cfg.optimization_target == "load":
        if base == "prefill":
            return Rule(cfg.prefill_scale_up_queue_tokens, cfg.prefill_scale_down_queue_tokens, _GE, _LE)
        return Rule(cfg.decode_scale_up_kv_rate / 100.0, cfg.decode_scale_down_kv_rate / 100.0, _GT, _LT)
    target = cfg.optimization_target if cfg.optimization_target in ("throughput", "latency") else "throughput"
    return RULES[(target, base)]


def load_value(kind: str, fpm: ForwardPassMetrics, limits: EngineLimits, absolute_prefill: bool = False) -> float:
    s, q = fpm.scheduled_requests, fpm.queued_requests
    if kind == "prefill":
        return float(q.sum_prefill_tokens) if absolute_prefill else q.sum_prefill_tokens / limits.context_length
    kv = s.sum_decode_kv_tokens + q.sum_decode_kv_tokens
    if kind == "agg":
        kv += q.sum_prefill_tokens
    return kv / limits.max_kv_tokens


WORKER_COUNT_MISMATCH = "worker_count_mismatch"  # Dynamo's load-decision reason (its metric state)


def fpm_coverage_gap(engines: Iterable[tuple[int, int]], replicas: int) -> str | None:
    """Why one pool's FPMs cannot speak for the pool, else None (Dynamo 1.6.1
    `_reconcile_fpm_worker_count`). `engines`: the (instance id, dp rank) of each engine whose FPM
    counts now; `replicas`: the pool's ready replicas. Distinct workers must equal the replicas, and
    every worker must report the same number of dp ranks. A replica just started that has not
    reported yet, or a removed one still reporting, would otherwise let one engine's load decide
    for the whole pool. No FPM at all is not a gap here: the decision holds for want of data."""
    ranks: dict[int, set[int]] = {}
    for worker, dp in engines:
        ranks.setdefault(worker, set()).add(dp)
    if not ranks:
        return None
    if len(ranks) != replicas:
        return f"{replicas} ready replica(s), FPMs from {len(ranks)} worker(s)"
    if len({len(dps) for dps in ranks.values()}) > 1:
        shown = ", ".join(f"{w:x}: {sorted(dps)}" for w, dps in sorted(ranks.items()))
        return f"workers report different dp ranks ({shown})"
    return None


def reactive_decision(cfg: PlannerConfig, role: str, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                      current: int) -> Decision:
    """One pool's decision from its engines' latest FPMs (`current` = replicas now)."""
    kind = pool_kind(cfg, role)
    rule = rule_for(cfg, kind)
    absolute = cfg.optimization_target == "load"
    values = [load_value(kind, fpm, lim, absolute) for fpm, lim in engines]
    lo, hi = cfg.min_for(role), cfg.max_for(role)
    step = cfg.load_scaling_step
    shown = ", ".join(f"{v:.2f}" for v in values)
    name = f"{cfg.optimization_target} {kind} load [{shown}]"
    if not values:
        return Decision(role, current, current, f"{name}: no engine reports yet, hold")
    busiest = max(values)
    if any(rule.up_cmp(v, rule.up) for v in values):
        target = min(current + step, hi)
        why = f"{name}: an engine is over the up threshold {rule.up:g}"
        return Decision(role, current, max(target, current), why if target > current else why + " (at max)")
    if all(rule.down_cmp(v, rule.down) for v in values) and current > lo:
        if current == 1:  # scale to zero (min_endpoint 0) only when fully idle
            idle = all(fpm.idle for fpm, _ in engines)
            return Decision(role, current, 0 if idle else 1,
                            f"{name}: idle, scale to zero" if idle else f"{name}: not idle, hold at 1")
        if busiest * current / (current - 1) >= rule.up:
            return Decision(role, current, current,
                            f"{name}: under {rule.down:g} but one replica fewer would cross {rule.up:g}, hold")
        target = max(current - step, lo, 1)
        return Decision(role, current, target, f"{name}: every engine under the down threshold {rule.down:g}")
    return Decision(role, current, current, f"{name}: within thresholds, hold")

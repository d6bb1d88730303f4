"""Target `sla`: the load loop's TTFT/ITL estimates from the fitted perf model, and the
throughput loop's per-engine capacity (Dynamo 1.6.1 `perf_model/*`, `throughput_scaling.py`).

All times are milliseconds; `kv_hit` is the prefix-cache hit rate (0..1).

A scale-down is consolidation-aware (Dynamo PR #9294) and judged on load, not on a snapshot of
the queue: N replicas that keep up show an empty queue, and an empty queue spread over N-1 is
still empty, so "one replica fewer keeps the SLA" held under steady load and the pool flapped
N -> N-1 -> N. The time the pool's engines spent prefilling (`Workload.prefill_busy`, measured from
FPMs), spread over N-1 engines, must leave each under `load_scaling_down_sensitivity` busy, and the
TTFT there (the queue moved over plus the mean wait of an engine that busy) must keep the SLA's
margin. A pool that serves prefill too (agg) goes down only when both its TTFT and its ITL checks allow
it; there the whole of an iteration that prefilled counts as prefill time (conservative: it holds more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from dynamo.llm.forward_pass import ForwardPassMetrics
from dynamo.planner.config import PlannerConfig
from dynamo.planner.load_scaling import Decision, EngineLimits
from dynamo.planner.perf_model import PerfModel, chunked_prefill_ms, decode_x


@dataclass
class Workload:
    """Averages the estimates need (from FPMs or Prometheus)."""

    isl: float
    osl: float = 0.0
    kv_hit: float = 0.0
    num_decode: float = 0.0  # average running decode requests per engine
    decode_len: float = 0.0  # average KV tokens per decode request
    prefill_busy: float | None = None  # engine-s/s the pool spent prefilling last interval (None: unknown)


def prefill_ttft_ms(model: PerfModel, queued_tokens: float, w: Workload, chunk: int) -> float:
    """TTFT for a new request behind `queued_tokens`: the queue plus its own prompt, uncached part."""
    return chunked_prefill_ms(model, (queued_tokens + w.isl) * (1.0 - w.kv_hit), chunk)


def decode_itl_ms(model: PerfModel, num_decode: float, kv_tokens: float, w: Workload, accept: float = 1.0) -> float:
    """ITL with one more request joining `num_decode` requests holding `kv_tokens`."""
    return model.predict(decode_x(model, num_decode + 1, kv_tokens + w.decode_len)) * 1000.0 / accept


def sla_prefill_decision(cfg: PlannerConfig, model: PerfModel, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                         w: Workload, current: int, role: str = "prefill") -> Decision:
    sla = cfg.ttft_ms
    ests = [prefill_ttft_ms(model, f.queued_requests.sum_prefill_tokens, w, lim.max_num_batched_tokens)
            for f, lim in engines]
    shown = f"sla prefill: est TTFT [{', '.join(f'{e:.0f}' for e in ests)}] ms vs {sla:g} ms"
    worst = {"ttft_ms": max(ests)} if ests else {}
    if ests and all(e > sla for e in ests):
        target = min(current + cfg.load_scaling_step, cfg.max_for(role))
        return Decision(role, current, max(target, current), f"{shown}: every engine over the SLA", worst)
    if ests and current > max(1, cfg.min_for(role)):
        fits, why = prefill_fits_fewer(cfg, model, engines, w, current)
        if not fits:
            return Decision(role, current, current, f"{shown}: {why}, hold", worst)
        return Decision(role, current, current - 1, f"{shown}: one replica fewer keeps the SLA ({why})", worst)
    return Decision(role, current, current, f"{shown}: hold", worst)


def prefill_fits_fewer(cfg: PlannerConfig, model: PerfModel, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                       w: Workload, current: int) -> tuple[bool, str]:
    """Whether `current - 1` engines keep the TTFT SLA with the pool's measured load spread over them, and why."""
    sla, sens = cfg.ttft_ms, cfg.load_scaling_down_sensitivity / 100.0
    if w.prefill_busy is None:
        return False, "prefill load not measured over a full interval yet"
    # `prefill_busy` sums every engine, one per (replica, dp rank): spread it over the engines of N-1 replicas
    busy = w.prefill_busy / (len(engines) / current * (current - 1))
    if busy >= sens:
        return False, f"{current - 1} replica(s) would be {busy:.0%} busy with prefill per engine (limit {sens:.0%})"
    scale, worst = current / (current - 1), 0.0
    for f, lim in engines:
        own = prefill_ttft_ms(model, 0, w, lim.max_num_batched_tokens)
        # the queue moved over, plus the M/D/1 mean wait behind engines that busy (an empty queue now is
        # no proof that fewer engines keep up)
        post = prefill_ttft_ms(model, f.queued_requests.sum_prefill_tokens * scale, w, lim.max_num_batched_tokens)
        post += own * busy / (2.0 * (1.0 - busy))
        worst = max(worst, post)
        if post - own >= (sla - own) * sens:
            return False, f"one replica fewer would queue to est TTFT {post:.0f} ms"
    return True, f"at {current - 1}: est TTFT {worst:.0f} ms, {busy:.0%} busy"


def sla_decode_decision(cfg: PlannerConfig, model: PerfModel, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                        w: Workload, current: int, role: str = "decode") -> Decision:
    sla, sens = cfg.itl_ms, cfg.load_scaling_down_sensitivity / 100.0
    accept = 1.0 + cfg.speculative_nextn
    kv = [f.scheduled_requests.sum_decode_kv_tokens + f.queued_requests.sum_decode_kv_tokens for f, _ in engines]
    # Each engine's own batch with its own KV: requests and KV tokens move together, and the
    # model's two features are nearly collinear, so mixing a pool average with one engine's KV misleads.
    reqs = [f.scheduled_requests.num_decode_requests + f.queued_requests.num_decode_requests for f, _ in engines]
    ests = [decode_itl_ms(model, n, k, w, accept) for n, k in zip(reqs, kv)]
    shown = f"sla decode: est ITL [{', '.join(f'{e:.1f}' for e in ests)}] ms vs {sla:g} ms"
    worst_itl = {"itl_ms": max(ests)} if ests else {}
    if ests and all(e > sla for e in ests):
        target = min(current + cfg.load_scaling_step, cfg.max_for(role))
        return Decision(role, current, max(target, current), f"{shown}: every engine over the SLA", worst_itl)
    if ests and current > max(1, cfg.min_for(role)):
        scale, worst = current / (current - 1), 0.0
        for (_, lim), k, n in zip(engines, kv, reqs):
            post = decode_itl_ms(model, n * scale, k * scale, w, accept)
            worst = max(worst, post)
            if k * scale >= lim.max_kv_tokens or post >= sla * sens:
                return Decision(role, current, current, f"{shown}: one replica fewer would break the SLA, hold",
                                worst_itl)
        return Decision(role, current, current - 1,
                        f"{shown}: one replica fewer keeps the SLA (at {current - 1}: est ITL {worst:.1f} ms)", worst_itl)
    return Decision(role, current, current, f"{shown}: hold", worst_itl)


def sla_agg_decision(cfg: PlannerConfig, model: PerfModel, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                     w: Workload, current: int, role: str = "decode",
                     steady: Callable[[Decision], Decision] = lambda d: d) -> Decision:
    """A pool that serves prefill and decode (agg) answers for both SLAs: up when either estimate asks for it,
    down only when both the TTFT and the ITL checks allow one replica fewer. `steady` passes judgement on the
    TTFT side's decision first (the planner's scale-down hysteresis)."""
    p = steady(sla_prefill_decision(cfg, model, engines, w, current, role))
    d = sla_decode_decision(cfg, model, engines, w, current, role)
    both = {**p.estimate, **d.estimate}
    if max(p.target, d.target) > current:
        up = p if p.target >= d.target else d
        return Decision(role, current, up.target, up.reason, both)
    down = p.target < current and d.target < current
    note = "" if down or min(p.target, d.target) == current else "; agg: a scale-down needs both SLAs kept, hold"
    return Decision(role, current, current - 1 if down else current, f"{p.reason}; {d.reason}{note}", both)


def prefill_capacity_rps(model: PerfModel, isl: float, kv_hit: float, lim: EngineLimits, ttft_sla: float) -> float:
    """Largest request rate one prefill engine sustains with batches whose TTFT meets the SLA."""
    eff = math.ceil(isl * (1.0 - kv_hit))
    if eff <= 0:
        return math.inf
    best = 0.0
    for b in range(1, max(1, lim.max_num_seqs) + 1):
        ttft = chunked_prefill_ms(model, b * eff, lim.max_num_batched_tokens)
        if ttft > ttft_sla:
            break
        best = max(best, b / (ttft / 1000.0)) if ttft > 0 else math.inf
    if best == 0.0:  # not even one request meets the SLA: serial rate (Dynamo's fallback)
        one = chunked_prefill_ms(model, eff, lim.max_num_batched_tokens)
        best = 1000.0 / one if one > 0 else math.inf
    return best


def decode_capacity_rps(model: PerfModel, isl: float, osl: float, lim: EngineLimits, itl_sla: float,
                        accept: float = 1.0) -> float:
    """Largest request rate one decode engine sustains with a batch whose ITL meets the SLA."""
    ctx = isl + osl // 2
    if osl <= 0:
        return math.inf
    top = int(min(lim.max_kv_tokens / max(ctx, 1), lim.max_num_seqs))
    lo, hi, best_b = 1, max(1, top), 0
    while lo <= hi:  # ITL grows with the batch: binary search the largest batch within the SLA
        mid = (lo + hi) // 2
        if model.predict(decode_x(model, mid, mid * ctx)) * 1000.0 / accept <= itl_sla:
            best_b, lo = mid, mid + 1
        else:
            hi = mid - 1
    b = max(best_b, 1)
    itl = model.predict(decode_x(model, b, b * ctx)) * 1000.0 / accept
    return b / (osl * itl / 1000.0) if itl > 0 else math.inf


def replicas_for(demand_rps: float, engine_rps: float, current: int, cfg: PlannerConfig, role: str) -> int:
    """Replicas to serve the predicted demand, within min/max and ±max_throughput_scaling_replicas."""
    need = 0 if demand_rps <= 0 else math.ceil(demand_rps / engine_rps) if engine_rps > 0 else cfg.max_for(role)
    need = min(max(need, cfg.min_for(role)), cfg.max_for(role))
    step = cfg.max_throughput_scaling_replicas
    return min(max(need, current - step), current + step)

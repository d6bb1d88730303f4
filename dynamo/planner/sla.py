"""Target `sla`: the load loop's TTFT/ITL estimates from the fitted perf model, and the
throughput loop's per-engine capacity (Dynamo 1.6.1 `perf_model/*`, `throughput_scaling.py`).

All times are milliseconds; `kv_hit` is the prefix-cache hit rate (0..1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def prefill_ttft_ms(model: PerfModel, queued_tokens: float, w: Workload, chunk: int) -> float:
    """TTFT for a new request behind `queued_tokens`: the queue plus its own prompt, uncached part."""
    return chunked_prefill_ms(model, (queued_tokens + w.isl) * (1.0 - w.kv_hit), chunk)


def decode_itl_ms(model: PerfModel, num_decode: float, kv_tokens: float, w: Workload, accept: float = 1.0) -> float:
    """ITL with one more request joining `num_decode` requests holding `kv_tokens`."""
    return model.predict(decode_x(model, num_decode + 1, kv_tokens + w.decode_len)) * 1000.0 / accept


def sla_prefill_decision(cfg: PlannerConfig, model: PerfModel, engines: list[tuple[ForwardPassMetrics, EngineLimits]],
                         w: Workload, current: int, role: str = "prefill") -> Decision:
    sla, sens = cfg.ttft_ms, cfg.load_scaling_down_sensitivity / 100.0
    ests = [prefill_ttft_ms(model, f.queued_requests.sum_prefill_tokens, w, lim.max_num_batched_tokens)
            for f, lim in engines]
    shown = f"sla prefill: est TTFT [{', '.join(f'{e:.0f}' for e in ests)}] ms vs {sla:g} ms"
    if ests and all(e > sla for e in ests):
        target = min(current + cfg.load_scaling_step, cfg.max_for(role))
        return Decision(role, current, max(target, current), f"{shown}: every engine over the SLA")
    if ests and current > max(1, cfg.min_for(role)):
        scale = current / (current - 1)
        for f, lim in engines:
            own = prefill_ttft_ms(model, 0, w, lim.max_num_batched_tokens)
            post = prefill_ttft_ms(model, f.queued_requests.sum_prefill_tokens * scale, w, lim.max_num_batched_tokens)
            if post - own >= (sla - own) * sens:
                return Decision(role, current, current, f"{shown}: one replica fewer would queue too much, hold")
        return Decision(role, current, current - 1, f"{shown}: one replica fewer keeps the SLA")
    return Decision(role, current, current, f"{shown}: hold")


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
    if ests and all(e > sla for e in ests):
        target = min(current + cfg.load_scaling_step, cfg.max_for(role))
        return Decision(role, current, max(target, current), f"{shown}: every engine over the SLA")
    if ests and current > max(1, cfg.min_for(role)):
        scale = current / (current - 1)
        for (_, lim), k, n in zip(engines, kv, reqs):
            if k * scale >= lim.max_kv_tokens or decode_itl_ms(model, n * scale, k * scale, w, accept) >= sla * sens:
                return Decision(role, current, current, f"{shown}: one replica fewer would break the SLA, hold")
        return Decision(role, current, current - 1, f"{shown}: one replica fewer keeps the SLA")
    return Decision(role, current, current, f"{shown}: hold")


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

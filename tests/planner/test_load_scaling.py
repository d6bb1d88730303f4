"""Targets `throughput`, `latency` and `load`: Dynamo 1.6.1's thresholds on worked examples
(reference §1.4), the anti-flap guard, min/max endpoints and scale to zero; the FPM coverage a
load decision needs (Dynamo's `_reconcile_fpm_worker_count`)."""

from __future__ import annotations

import pytest

from dynamo.llm.forward_pass import ForwardPassMetrics, QueuedRequests, ScheduledRequests
from dynamo.planner.config import PlannerConfig
from dynamo.planner.load_scaling import EngineLimits, fpm_coverage_gap, load_value, reactive_decision

LIM = EngineLimits(context_length=8192, max_kv_tokens=10_000, max_num_batched_tokens=2048, max_num_seqs=64)


def fpm(queued_prefill: int = 0, decode_kv: int = 0, queued_decode_kv: int = 0, decoding: int = 0) -> ForwardPassMetrics:
    return ForwardPassMetrics(
        worker_id="1", wall_time=0.01,
        scheduled_requests=ScheduledRequests(num_decode_requests=decoding or (1 if decode_kv else 0),
                                             sum_decode_kv_tokens=decode_kv),
        queued_requests=QueuedRequests(num_prefill_requests=1 if queued_prefill else 0,
                                       sum_prefill_tokens=queued_prefill,
                                       num_decode_requests=1 if queued_decode_kv else 0,
                                       sum_decode_kv_tokens=queued_decode_kv))


def cfg(**kw) -> PlannerConfig:
    return PlannerConfig(**{"environment": "local", "optimization_target": "throughput", **kw})


def decide(c: PlannerConfig, role: str, engines: list[ForwardPassMetrics], n: int):
    return reactive_decision(c, role, [(e, LIM) for e in engines], n)


def test_load_values():
    assert load_value("prefill", fpm(queued_prefill=4096), LIM) == 0.5
    assert load_value("prefill", fpm(queued_prefill=4096), LIM, absolute_prefill=True) == 4096
    assert load_value("decode", fpm(decode_kv=3000, queued_decode_kv=1000), LIM) == 0.4
    assert load_value("agg", fpm(queued_prefill=2000, decode_kv=3000), LIM) == 0.5


def test_throughput_prefill_up_at_a_full_context_of_queue_on_any_engine():
    c = cfg(mode="disagg")
    assert decide(c, "prefill", [fpm(queued_prefill=8192), fpm()], 2).target == 3  # >= 1.0
    assert decide(c, "prefill", [fpm(queued_prefill=8191), fpm()], 2).target == 2  # 0.9999: hold


def test_throughput_prefill_down_only_when_every_engine_is_under_a_tenth():
    c = cfg(mode="disagg")
    assert decide(c, "prefill", [fpm(queued_prefill=800), fpm()], 3).target == 2  # 0.098 < 0.1
    assert decide(c, "prefill", [fpm(queued_prefill=820), fpm()], 3).target == 3  # 0.1001


def test_throughput_decode_thresholds_and_anti_flap():
    c = cfg(mode="disagg")
    assert decide(c, "decode", [fpm(decode_kv=10_001)], 1).target == 2  # > 1.0
    assert decide(c, "decode", [fpm(decode_kv=10_000)], 1).target == 1  # not > 1.0
    assert decide(c, "decode", [fpm(decode_kv=6000), fpm()], 2).target == 2  # 0.6 is not < 0.6
    # 0.5 on 2 engines: one fewer gives 0.5 * 2/1 = 1.0 >= 1.0 -> hold (the 2<->1 flap)
    held = decide(c, "decode", [fpm(decode_kv=5000), fpm()], 2)
    assert held.target == 2 and "one replica fewer" in held.reason
    # on 3 engines: 0.5 * 3/2 = 0.75 < 1.0 -> 2
    assert decide(c, "decode", [fpm(decode_kv=5000), fpm(), fpm()], 3).target == 2


def test_latency_thresholds():
    c = cfg(mode="disagg", optimization_target="latency")
    assert decide(c, "prefill", [fpm(queued_prefill=820)], 1).target == 2  # 0.1001 >= 0.1
    assert decide(c, "prefill", [fpm(queued_prefill=1), fpm()], 2).target == 2  # down needs all <= 0
    assert decide(c, "prefill", [fpm(), fpm()], 2).target == 1
    assert decide(c, "decode", [fpm(decode_kv=4001)], 1).target == 2  # > 0.4
    assert decide(c, "decode", [fpm(decode_kv=900), fpm()], 2).target == 1  # 0.09 < 0.1; 0.09 * 2 < 0.4
    assert decide(c, "decode", [fpm(decode_kv=1000), fpm()], 2).target == 2  # 0.1 is not < 0.1


def test_agg_counts_queued_prefill_as_decode_load():
    c = cfg(mode="agg", optimization_target="latency")
    assert decide(c, "decode", [fpm(queued_prefill=4500)], 1).target == 2  # 0.45 > 0.4


def test_load_target_uses_the_user_thresholds():
    c = cfg(mode="disagg", optimization_target="load", prefill_scale_up_queue_tokens=2000,
            prefill_scale_down_queue_tokens=100, decode_scale_up_kv_rate=80, decode_scale_down_kv_rate=20)
    assert decide(c, "prefill", [fpm(queued_prefill=2000)], 1).target == 2
    assert decide(c, "prefill", [fpm(queued_prefill=50), fpm()], 3).target == 2
    assert decide(c, "decode", [fpm(decode_kv=8100)], 1).target == 2
    assert decide(c, "decode", [fpm(decode_kv=1900), fpm(), fpm()], 3).target == 2


def test_min_max_endpoints_and_step():
    c = cfg(mode="disagg", max_endpoint=3, decode_min_endpoint=2, load_scaling_step=2)
    assert decide(c, "decode", [fpm(decode_kv=20_000)], 1).target == 3  # +2 capped at max 3
    assert decide(c, "decode", [fpm(decode_kv=20_000)] * 3, 3).reason.endswith("(at max)")
    assert decide(c, "decode", [fpm()] * 4, 4).target == 2  # -2, floor 2
    assert decide(c, "decode", [fpm()] * 2, 2).target == 2


def test_scale_to_zero_only_when_idle():
    c = cfg(mode="disagg", min_endpoint=0)
    assert decide(c, "decode", [fpm()], 1).target == 0
    assert decide(c, "decode", [fpm(decode_kv=10)], 1).target == 1  # under 0.6 but still serving


def test_no_reports_hold():
    d = decide(cfg(mode="disagg"), "decode", [], 2)
    assert d.target == 2 and "no engine reports" in d.reason


def test_fpms_from_fewer_workers_than_replicas_do_not_cover_the_pool():
    # the audit's case: a second replica is ready, only the first has reported
    assert fpm_coverage_gap([(0xA, 0)], 2) == "2 ready replica(s), FPMs from 1 worker(s)"
    assert fpm_coverage_gap([(0xA, 0), (0xB, 0)], 2) is None
    # a removed worker's FPM still counted: more workers than replicas
    assert fpm_coverage_gap([(0xA, 0), (0xB, 0), (0xC, 0)], 2) == "2 ready replica(s), FPMs from 3 worker(s)"
    assert fpm_coverage_gap([(0xA, 0)], 0) is not None


def test_fpm_coverage_counts_workers_not_dp_ranks_and_wants_the_same_ranks_from_each():
    both = [(0xA, 0), (0xA, 1), (0xB, 0), (0xB, 1)]
    assert fpm_coverage_gap(both, 2) is None  # 4 engines, 2 workers of dp 2
    assert fpm_coverage_gap(both, 4) == "4 ready replica(s), FPMs from 2 worker(s)"
    gap = fpm_coverage_gap([(0xA, 0), (0xA, 1), (0xB, 0)], 2)  # B's rank 1 has not reported
    assert gap is not None and "different dp ranks" in gap and "b: [0]" in gap


def test_no_fpm_at_all_is_not_a_coverage_gap():
    assert fpm_coverage_gap([], 2) is None  # the decision holds for want of data instead


def test_load_target_requires_its_thresholds():
    with pytest.raises(ValueError, match="needs prefill_scale"):
        cfg(optimization_target="load")
    with pytest.raises(ValueError, match="up > down"):
        cfg(optimization_target="load", prefill_scale_up_queue_tokens=10, prefill_scale_down_queue_tokens=1,
            decode_scale_up_kv_rate=20, decode_scale_down_kv_rate=30)

"""Load predictors, the GPU budget fit, and PlannerConfig parsing/validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dynamo.planner.budget import fit_budget, gpus
from dynamo.planner.config import PlannerArgs, PlannerConfig, load_config
from dynamo.planner.predictors import ArimaPredictor, ConstantPredictor, KalmanPredictor, make_predictor


def feed(p, values):
    for v in values:
        p.observe(v)
    return p


def test_constant_predicts_the_last_value_and_skips_leading_zeros():
    p = feed(ConstantPredictor(), [0, 0, 0, 5, 7])
    assert p.history == [5.0, 7.0] and p.predict() == 7
    assert ConstantPredictor().predict() == 0.0
    assert feed(ConstantPredictor(), [3, 0]).predict() == 0  # zeros after traffic count: load stopped


def test_kalman_follows_a_trend():
    p = feed(KalmanPredictor(q_level=1.0, q_trend=0.1, r=1.0), [10 + 2 * i for i in range(30)])
    assert p.predict() == pytest.approx(70, abs=1.0)
    assert feed(KalmanPredictor(min_points=5), [4, 6]).predict() == 6  # too few points: last value


def test_arima_follows_a_trend_and_an_ar_process():
    assert feed(ArimaPredictor(), [10 + 2 * i for i in range(30)]).predict() == pytest.approx(70, abs=0.5)
    rng = np.random.default_rng(0)
    x = [50.0]
    for _ in range(200):
        x.append(50 + 0.8 * (x[-1] - 50) + rng.normal(0, 1))
    p = feed(ArimaPredictor(window=200), x)
    expected = 50 + 0.8 * (x[-1] - 50)
    assert p.predict() == pytest.approx(expected, abs=1.5)
    assert p.order is not None and p.order[0] >= 1


def test_arima_never_predicts_negative_demand():
    assert feed(ArimaPredictor(), [40, 30, 20, 10, 5, 1, 0, 0]).predict() >= 0.0


def test_registry():
    assert isinstance(make_predictor("constant"), ConstantPredictor)
    assert isinstance(make_predictor("kalman"), KalmanPredictor)
    assert isinstance(make_predictor("prophet"), ArimaPredictor)  # logged substitution
    with pytest.raises(ValueError):
        make_predictor("lstm")


def cfg(**kw) -> PlannerConfig:
    return PlannerConfig(**{"environment": "local", **kw})


def test_budget_is_never_exceeded():
    c = cfg(max_gpu_budget=8, prefill_engine_num_gpu=1, decode_engine_num_gpu=2)
    out, note = fit_budget({"prefill": 4, "decode": 4}, c)
    assert gpus(out, c) <= 8 and out["prefill"] >= 1 and out["decode"] >= 1 and "GPU budget 8" in note
    out, note = fit_budget({"prefill": 1, "decode": 3}, c)
    assert out == {"prefill": 1, "decode": 3} and note is None
    tight = cfg(max_gpu_budget=2, prefill_engine_num_gpu=2, decode_engine_num_gpu=2)
    out, note = fit_budget({"prefill": 1, "decode": 1}, tight)  # even the minimums do not fit
    assert gpus(out, tight) <= 2 and "the budget wins" in note


def test_min_budget_raises_pools():
    c = cfg(max_gpu_budget=8, min_gpu_budget=4)
    out, note = fit_budget({"prefill": 1, "decode": 1}, c)
    assert gpus(out, c) == 4 and "min GPU budget" in note


def test_config_defaults_match_dynamo_1_6_1():
    c = PlannerConfig()
    assert (c.environment, c.backend, c.mode, c.optimization_target) == ("kubernetes", "vllm", "disagg", "throughput")
    assert (c.throughput_adjustment_interval_seconds, c.load_adjustment_interval_seconds) == (180, 5)
    assert (c.max_gpu_budget, c.min_gpu_budget, c.min_endpoint, c.ttft_ms, c.itl_ms) == (8, -1, 1, 500, 50)
    assert (c.load_predictor, c.max_num_fpm_samples, c.fpm_sample_bucket_size) == ("arima", 64, 16)
    assert (c.load_scaling_down_sensitivity, c.load_min_observations) == (80, 5)
    # non-sla targets run the load loop only
    assert c.enable_load_scaling is True and c.enable_throughput_scaling is False
    assert c.scheduling.scale_interval_seconds == 5


def test_config_aliases_files_and_errors(tmp_path):
    assert cfg(ttft=200, itl=20).ttft_ms == 200
    path = tmp_path / "p.yaml"
    path.write_text("environment: local\noptimization_target: sla\nttft_ms: 300\n")
    c = load_config(str(path), PlannerArgs(namespace="ns1", prometheus_endpoint="http://127.0.0.1:9"))
    assert (c.ttft_ms, c.namespace, c.prometheus_endpoint, c.enable_throughput_scaling) == \
        (300, "ns1", "http://127.0.0.1:9", True)
    (tmp_path / "p.json").write_text(json.dumps({"mode": "agg"}))
    assert load_config(str(tmp_path / "p.json")).mode == "agg"
    for bad, match in (('{"optimization_target": "speed"}', "optimization_target"),
                       ('{"ttft_msec": 3}', "ttft_msec"),
                       ('{"fpm_sample_bucket_size": 10}', "perfect square"),
                       ('{"optimization_target": "sla", "load_adjustment_interval_seconds": 200}', "shorter"),
                       ('{"environment": "virtual"}', "model_name")):
        with pytest.raises(ValueError, match=match):
            load_config(bad)
    assert math.isfinite(cfg().max_for("decode"))

"""The `sla` perf models start from the profiler's interpolation data (Dynamo's layout,
written by `dynamo.profiler.interpolation.write_profile`), before any live FPM."""

from __future__ import annotations

import pytest

from dynamo.planner.bootstrap import seed_models
from dynamo.planner.perf_model import agg_model, decode_model, prefill_model
from dynamo.profiler.interpolation import DecodeProfile, PrefillProfile, Profile, write_profile


def linear_profile() -> Profile:
    isl = [100.0, 500.0, 1000.0, 1500.0, 2000.0]
    prefill = PrefillProfile(isl, [10 + 0.01 * i for i in isl], [1000.0] * 5)  # ms: 10 + 10 us/token
    max_kv = 100_000
    xs, ys, zs = [], [], []
    for ctx in (500.0, 1000.0):
        for x in (0.05, 0.2, 0.5, 0.8):
            kv = x * max_kv
            xs.append(x)
            ys.append(ctx)
            zs.append(2 + 0.1 * kv / ctx + 0.001 * kv)  # ms: 2 + 0.1/request + 1 us/KV token
    return Profile(prefill, DecodeProfile(xs, ys, zs, [1.0] * len(xs), max_kv))


def test_seeded_models_predict_the_profile(tmp_path):
    write_profile(tmp_path, linear_profile())
    models = {"prefill": prefill_model(2048), "decode": decode_model(256, 100_000)}
    assert seed_models(models, str(tmp_path)) == 13
    assert models["prefill"].predict((800,)) == pytest.approx(0.018)
    assert models["decode"].predict((40, 30_000)) == pytest.approx(0.002 + 0.004 + 0.030)


def test_agg_model_takes_both_phases(tmp_path):
    write_profile(tmp_path, linear_profile())
    models = {"decode": agg_model(2048, 100_000)}
    assert seed_models(models, str(tmp_path)) == 13 and models["decode"].ready


def test_missing_data_is_reported_not_fatal(tmp_path):
    models = {"prefill": prefill_model(2048)}
    assert seed_models(models, str(tmp_path / "nothing")) == 0 and not models["prefill"].ready


def test_a_model_that_appears_later_is_seeded_too(tmp_path):
    """The planner seeds each role's model when it appears (the decode pool may be found ticks after the
    prefill pool); seeding the prefill model alone first leaves the decode model's points for later."""
    write_profile(tmp_path, linear_profile())
    models = {"prefill": prefill_model(2048)}
    assert seed_models(models, str(tmp_path)) == 5
    models["decode"] = decode_model(256, 100_000)
    assert seed_models({"decode": models["decode"]}, str(tmp_path)) == 8 and models["decode"].ready

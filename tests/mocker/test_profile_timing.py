"""`--planner-profile-data`: the mocker's step times follow the profiler's measurements."""

from __future__ import annotations

import pytest

from dynamo.llm.perf_data import DecodeProfile, PrefillProfile, Profile, write_profile
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.engine import MockEngine
from dynamo.mocker.timing import TimingModel, decode_ms, prefill_ms


def measured() -> Profile:
    prefill = PrefillProfile([100.0, 1100.0], [50.0, 250.0], [2000.0, 4400.0])
    decode = DecodeProfile([0.1, 0.5, 0.1, 0.5], [200.0, 200.0, 1200.0, 1200.0], [20.0, 40.0, 30.0, 60.0],
                           [1.0, 1.0, 1.0, 1.0], max_kv_tokens=10000)
    return Profile(prefill, decode)


def test_profiled_step_times_replace_the_polynomials():
    t = TimingModel(speedup_ratio=2.0, profile=measured())
    # Prefill of 600 new tokens: the measured TTFT at ISL 600 (150 ms), halved by the speedup.
    assert t.step_seconds(600, False, 0.0) == pytest.approx(0.075)
    # Decode: 3000 active tokens over 15 sequences → context 200, KV usage 0.3 → ITL 30 ms.
    assert t.step_seconds(0, True, 0.0, active_tokens=3000, running=15) == pytest.approx(0.015)
    # Both in one step add up (agg), as Dynamo's interpolated mocker does.
    assert t.step_seconds(600, True, 0.0, 3000, 15) == pytest.approx(0.09)
    plain = TimingModel(speedup_ratio=1.0)
    assert plain.step_seconds(600, True, 0.3, 3000, 15) == pytest.approx((prefill_ms(600) + decode_ms(0.3)) / 1e3)


def test_engine_loads_profile_dir_and_rejects_missing(tmp_path):
    write_profile(tmp_path, measured())
    engine = MockEngine(MockerArgs(planner_profile_data=str(tmp_path)), vocab_size=1000, context_length=4096,
                        eos_token_ids=[2], special_ids=[])
    assert engine.timing.profile == measured()
    with pytest.raises(ValueError, match="no such file"):
        MockerArgs(planner_profile_data=str(tmp_path / "nope")).validate()

"""The profiler → planner/mocker performance-data contract: npz byte compatibility with NumPy,
Dynamo's file layout, and the interpolators' answers on known surfaces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dynamo.llm.npz import load_npz, save_npz
from dynamo.llm.perf_data import (DecodeProfile, PrefillProfile, Profile, load_profile, write_profile)


def test_npz_round_trips_and_matches_numpy(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, {"f": [1.5, 2.5, -3.0], "i": [7], "g": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})
    ours = load_npz(path)
    assert ours == {"f": [1.5, 2.5, -3.0], "i": [7], "g": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    theirs = np.load(path)
    assert theirs["f"].dtype == np.float64 and theirs["i"].dtype == np.int64
    assert theirs["g"].shape == (2, 3) and theirs["g"][1, 2] == 6.0
    # And the other way: numpy's own files (float32, int32, Fortran order) read back right.
    np.savez(tmp_path / "b.npz", x=np.array([1, 2], dtype=np.int32), y=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
             z=np.array([0.5], dtype=np.float32))
    back = load_npz(tmp_path / "b.npz")
    assert back == {"x": [1, 2], "y": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "z": [0.5]}


def linear_decode() -> DecodeProfile:
    # itl = 10 + 20*x + ctx/100 at three context lengths and four loads each
    xs, ys, zs, ts = [], [], [], []
    for ctx in (500.0, 1500.0, 2500.0):
        for x in (0.1, 0.3, 0.6, 0.9):
            xs.append(x), ys.append(ctx), zs.append(10 + 20 * x + ctx / 100)
            ts.append(1000.0 * x * 8000 / ctx / zs[-1])
    return DecodeProfile(xs, ys, zs, ts, max_kv_tokens=8000)


def test_decode_surface_interpolates_and_finds_best_load():
    d = linear_decode()
    assert d.itl(0.3, 1500) == pytest.approx(10 + 6 + 15)
    assert d.itl(0.45, 1000) == pytest.approx(10 + 9 + 10)  # between points in both axes
    assert d.itl(1.0, 2500) == pytest.approx(10 + 20 + 25)  # past the last load: extrapolated
    assert d.itl(0.3, 9000) == pytest.approx(10 + 6 + 25)  # context clamped to the measured range
    assert d.itl_at_tokens(2400, 500) == pytest.approx(d.itl(0.3, 500))
    thpt, x, itl = d.best_throughput_per_gpu(30.0, 1500)
    assert itl <= 30.0 and x == pytest.approx(0.25, abs=0.01)
    _, x_top, _ = d.best_throughput_per_gpu(1e9, 500)  # never past the least-driven context's concurrency
    assert x_top == pytest.approx(0.9 * 500 / 2500)
    thpt_lo, x_lo, itl_lo = d.best_throughput_per_gpu(1.0, 1500)  # unmeetable: lightest measured load
    assert x_lo == 0.1 and itl_lo > 1.0


def test_layout_round_trip_in_dynamo_paths_and_configmap_json(tmp_path):
    prefill = PrefillProfile([100.0, 1100.0, 2100.0], [20.0, 60.0, 140.0], [5000.0, 18333.0, 15000.0])
    decode = linear_decode()
    write_profile(tmp_path, Profile(prefill, decode))
    raw = np.load(tmp_path / "selected_prefill_interpolation/raw_data.npz")
    assert sorted(raw.files) == ["prefill_isl", "prefill_thpt_per_gpu", "prefill_ttft"]
    raw = np.load(tmp_path / "selected_decode_interpolation/raw_data.npz")
    assert sorted(raw.files) == ["max_kv_tokens", "x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu"]
    assert raw["max_kv_tokens"].shape == (1,) and int(raw["max_kv_tokens"][0]) == 8000
    loaded = load_profile(tmp_path)
    assert loaded == Profile(prefill, decode)
    assert loaded.prefill.ttft(600) == pytest.approx(40.0)
    # The ConfigMap mount holds only the JSON twins.
    cm = tmp_path / "cm"
    cm.mkdir()
    for name in ("prefill_raw_data.json", "decode_raw_data.json"):
        (cm / name).write_text((tmp_path / name).read_text())
    assert load_profile(cm) == loaded
    assert json.loads((cm / "decode_raw_data.json").read_text())["max_kv_tokens"] == [8000]


def test_mocker_grid_npz_loads_as_profile(tmp_path):
    path = tmp_path / "perf_data.npz"
    np.savez(path, prefill_isl=np.array([100.0, 1000.0]), prefill_ttft_ms=np.array([10.0, 100.0]),
             decode_active_kv_tokens=np.array([1000.0, 4000.0]), decode_context_length=np.array([100.0, 1000.0]),
             decode_itl=np.array([[5.0, 6.0], [8.0, 9.0]]))
    prof = load_profile(path)
    assert prof.prefill.ttft(550) == pytest.approx(55.0)
    assert prof.decode.itl_at_tokens(2500, 550) == pytest.approx(7.0)


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="selected_prefill_interpolation"):
        load_profile(tmp_path)
    save_npz(tmp_path / "x.npz", {"prefill_isl": [1.0]})
    with pytest.raises(ValueError, match="neither prefill nor decode"):
        load_profile(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="same length"):
        PrefillProfile([1.0, 2.0], [1.0], [1.0])

"""Rapid search's planner profile data (`dynamo.profiler.aic_curves`) with a stand-in estimator: the
grid thorough sweeps, the engine's own limits, the planner's reading of it, and what happens when
AIConfigurator cannot estimate. The real AIConfigurator run is in `test_rapid.py`."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.llm.perf_data import DECODE_JSON, PREFILL_JSON, load_profile, write_profile
from dynamo.planner.bootstrap import seed_models
from dynamo.planner.load_scaling import EngineLimits
from dynamo.planner.perf_model import agg_model, decode_model, prefill_model
from dynamo.planner.sla import decode_capacity_rps, prefill_capacity_rps
from dynamo.profiler import dgdr, pipeline
from dynamo.profiler.aic_curves import estimate_profile, planner_wants_curves, rapid_profile
from dynamo.profiler.dgd import Choice, WorkerChoice
from dynamo.profiler.interpolation import decode_isls, prefill_isls
from dynamo.profiler.rapid import choice_from_rows
from dynamo.profiler.status import Status
from dynamo.profiler.thorough import SweepOptions

SWEEP = SweepOptions(max_context=8000, concurrency_points=5)
MAX_KV = 200_000


class Linear:
    """TTFT linear in ISL; ITL growing with batch size and with the KV it holds (ms)."""

    def __init__(self, oom_batch: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.oom_batch = oom_batch

    def ttft_ms(self, w, isl):
        self.calls.append(("ttft", w.role, isl))
        return 5.0 + 0.1 * isl / w.tp

    def itl_ms(self, w, isl, osl, batch):
        self.calls.append(("itl", w.role, isl, batch))
        if self.oom_batch is not None and batch >= self.oom_batch:
            raise RuntimeError("OOM: does not fit")
        return 8.0 + 0.05 * batch + 2e-5 * batch * (isl + osl / 2)

    def kv_tokens(self, w):
        return MAX_KV


def request(planner: dict | None = None, **spec) -> dgdr.Request:
    features = {"planner": planner} if planner is not None else {}
    return dgdr.parse({"metadata": {"name": "r"}, "spec": {"model": "Qwen/Qwen3-32B", "backend": "vllm",
                                                           "features": features, **spec}})


def disagg(max_num_seqs: int | None = None) -> Choice:
    return Choice("disagg", [WorkerChoice("prefill", 1), WorkerChoice("decode", 2, max_num_seqs=max_num_seqs)],
                  "aiconfigurator")


@pytest.mark.parametrize("planner, wanted", [
    (None, False),
    ({"optimization_target": "sla"}, True),
    ({"optimization_target": "sla", "enable_throughput_scaling": True}, True),
    ({"optimization_target": "sla", "pre_deployment_sweeping_mode": "none"}, False),
    ({"optimization_target": "throughput"}, False),  # a reactive target has no perf model to seed
])
def test_which_planners_get_estimated_curves(planner, wanted):
    assert planner_wants_curves(request(planner), "disagg") is wanted


def test_the_grid_is_thorough_sweep_grid_and_the_planner_reads_it(tmp_path):
    est = Linear()
    profile = estimate_profile(est, disagg(), SWEEP)
    assert profile.prefill.isl == [float(i) for i in prefill_isls(8000, SWEEP.prefill_granularity)]
    assert sorted(set(profile.decode.context_length)) == [i + 250.0 for i in decode_isls(8000, 6, 500)]
    assert profile.decode.max_kv_tokens == MAX_KV
    assert {c[1] for c in est.calls if c[0] == "ttft"} == {"prefill"}
    assert {c[1] for c in est.calls if c[0] == "itl"} == {"decode"}
    # Per GPU: the decode engine has 2.
    n, itl = 1, profile.decode.itl_ms[0]
    assert profile.decode.thpt_per_gpu[0] == pytest.approx(n / itl * 1000 / 2)
    write_profile(tmp_path, profile)
    assert load_profile(tmp_path / PREFILL_JSON).prefill == profile.prefill  # the ConfigMap's form
    assert load_profile(tmp_path / DECODE_JSON).decode == profile.decode
    models = {"prefill": prefill_model(8192), "decode": decode_model(256, MAX_KV)}
    assert seed_models(models, str(tmp_path)) == len(profile.prefill.isl) + len(profile.decode.itl_ms)
    lim = EngineLimits(context_length=8192, max_kv_tokens=MAX_KV, max_num_batched_tokens=8192, max_num_seqs=256)
    assert prefill_capacity_rps(models["prefill"], 4000, 0.0, lim, 600.0) > 0
    assert decode_capacity_rps(models["decode"], 4000, 500, lim, 20.0) > 0


def test_decode_concurrency_stays_within_the_engines_batch_limit_and_what_fits():
    est = Linear(oom_batch=40)
    profile = estimate_profile(est, disagg(max_num_seqs=48), SWEEP)
    batches = [c[3] for c in est.calls if c[0] == "itl"]
    assert max(batches) == 48 and min(batches) == 1
    # The points AIConfigurator refused (batch >= 40) are left out, not zero.
    assert all(z > 0 for z in profile.decode.itl_ms)
    assert len(profile.decode.itl_ms) == sum(1 for b in batches if b < 40)


def test_an_aggregated_pick_gives_both_curves_of_its_one_engine(tmp_path):
    est = Linear()
    profile = estimate_profile(est, Choice("agg", [WorkerChoice("agg", 4)], "aiconfigurator"), SWEEP)
    assert {c[1] for c in est.calls} == {"agg"}
    write_profile(tmp_path, profile)
    model = agg_model(8192, MAX_KV)
    assert seed_models({"decode": model}, str(tmp_path)) > 0 and model.ready


def test_an_estimate_that_fails_leaves_no_curves_and_says_so():
    class Broken(Linear):
        def kv_tokens(self, w):
            raise ValueError("unsupported model/backend/GPU for KV-cache estimation")

    choice = disagg()
    assert rapid_profile(request({"optimization_target": "sla"}), choice, SWEEP, Broken()) is None
    assert any("no profile data" in n and "live forward-pass metrics" in n for n in choice.notes)
    ok = disagg()
    assert rapid_profile(request({"optimization_target": "sla"}), ok, SWEEP, Linear()) is not None
    assert any("AIConfigurator estimates, not measurements" in n for n in ok.notes)


def test_a_moe_pick_keeps_its_expert_parallelism():
    row = {"tokens/s/gpu": "100", "(p)tp": "4", "(p)pp": "1", "(p)dp": "4", "(p)moe_tp": "1", "(p)moe_ep": "16",
           "(p)workers": "1", "(p)bs": "1", "(d)tp": "8", "(d)pp": "1", "(d)dp": "8", "(d)moe_tp": "None",
           "(d)moe_ep": "None", "(d)workers": "1", "(d)bs": "64"}
    choice = choice_from_rows(request({"optimization_target": "sla"}), {"disagg": [row]})
    p, d = choice.workers
    assert (p.moe_tp, p.moe_ep) == (1, 16) and (d.moe_tp, d.moe_ep) == (None, None)


def test_rapid_search_says_when_its_planner_gets_no_curves(tmp_path, monkeypatch):
    """The memory-fit fallback has no AIConfigurator pick to estimate: the notes say the planner starts
    from live metrics. A planner that reads no profile data costs no estimates at all."""
    fit = Choice("agg", [WorkerChoice("agg", 2)], "memory-fit")
    monkeypatch.setattr(pipeline, "rapid", lambda req, work, model_dir: fit)
    monkeypatch.setattr(pipeline, "rapid_profile", lambda *a: pytest.fail("nothing to estimate"))
    opts = pipeline.Options(output_dir=tmp_path)
    status = Status(tmp_path, "r", "d")
    req = request({"optimization_target": "sla"})
    assert asyncio.run(pipeline.rapid_search(req, opts, status)) == (fit, None)
    assert any("no profile data" in n for n in fit.notes)
    fit.notes.clear()
    monkeypatch.setattr(pipeline, "rapid", lambda req, work, model_dir: disagg())
    choice, profile = asyncio.run(pipeline.rapid_search(request({"optimization_target": "throughput"}), opts, status))
    assert profile is None and not any("profile data" in n for n in choice.notes)

"""A DGD from Dynamo 1.6.1's rapid profiler gives its planner an `aic_interpolation` spec, not profile
files: the planner estimates its curves with AIConfigurator at start (our profiler's `aic_curves` code
path), with the spec's picks and granularities; profile files win when present; without AIConfigurator,
or for picks it cannot estimate, one warning and the planner starts from live metrics. The slow test runs
the real AIConfigurator through the planner's start-up up to seeded perf models."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from dynamo.llm.model_card import ModelDeploymentCard, RuntimeConfig, WorkerType, card_record
from dynamo.llm.perf_data import write_profile
from dynamo.planner import sla
from dynamo.planner.aic_interpolation import sweep_of
from dynamo.planner.bootstrap import startup_profile
from dynamo.planner.config import PlannerArgs, convert, load_config
from dynamo.planner.connectors.base import make_connector
from dynamo.planner.observe import FpmCollector, limits_of
from dynamo.planner.planner import Planner
from dynamo.profiler.aic_curves import estimate_profile
from dynamo.profiler.interpolation import decode_isls, prefill_isls
from dynamo.runtime.config import build_parser, from_namespace
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.records import EndpointId, mdc_key
from tests.planner.test_bootstrap import linear_profile

FIXTURE = Path(__file__).parent / "data" / "dynamo_1_6_1_planner_profiler.json"


def dump(**changes) -> dict:
    """Dynamo's profiler dump (Qwen3-0.6B, TP2 prefill / TP4 decode on h200_sxm), its spec changed."""
    raw = json.loads(FIXTURE.read_text())
    raw["aic_interpolation"].update(changes)
    return raw


class Linear:
    """A stand-in for AIConfigurator where only the grid matters."""

    def ttft_ms(self, w, isl):
        return 5.0 + 0.01 * isl

    def itl_ms(self, w, isl, osl, batch):
        return 8.0 + 0.05 * batch

    def kv_tokens(self, w):
        return 500_000


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("dynamo")]


def test_the_spec_drives_the_profilers_sweep_with_its_picks_and_granularities():
    spec = convert(dump(prefill_interpolation_granularity=4, decode_interpolation_granularity=3,
                        decode_pick={"tp": 2, "dp": 4, "moe_tp": 1, "moe_ep": 8})).aic_interpolation
    choice, sweep = sweep_of(spec)
    p, d = choice.workers
    assert (p.role, p.tp, p.pp, p.dp) == ("prefill", 2, 1, 1)
    assert (d.role, d.tp, d.dp, d.moe_tp, d.moe_ep) == ("decode", 2, 4, 1, 8)
    assert (sweep.max_context, sweep.prefill_granularity, sweep.decode_granularity, sweep.concurrency_points) == \
        (8192, 4, 3, 3)
    profile = estimate_profile(Linear(), choice, sweep)
    assert profile.prefill.isl == [float(i) for i in prefill_isls(8192, 4)]
    contexts = [c - 250.0 for c in profile.decode.context_length]  # ISL + the 500-token decode OSL / 2
    assert sorted(set(contexts)) == [float(i) for i in decode_isls(8192, 3, 500)]
    assert max(contexts.count(c) for c in set(contexts)) == 3  # concurrency points per context length


async def test_a_system_aiconfigurator_does_not_know_warns_once_and_leaves_live_metrics(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = convert({**dump(system="no_such_gpu"), "profile_results_dir": str(tmp_path / "absent")})
    assert await startup_profile(cfg) is None
    [warning] = warnings_of(caplog)
    assert "AIConfigurator could not estimate Qwen/Qwen3-0.6B on no_such_gpu/vllm" in warning, warning
    assert "live forward-pass metrics" in warning


async def test_without_aiconfigurator_the_warning_names_the_extra(tmp_path, caplog, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("aiconfigurator", "aiconfigurator_core")] + [
            "aiconfigurator", "aiconfigurator.cli.api"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if the `profiler` extra were not installed
    caplog.set_level(logging.INFO)
    cfg = convert({**dump(), "profile_results_dir": str(tmp_path / "absent")})
    assert await startup_profile(cfg) is None
    [warning] = warnings_of(caplog)
    assert "AIConfigurator is not installed" in warning and "pip install 'dynamo-serve[profiler]'" in warning


async def test_profile_files_win_over_the_spec_and_reactive_targets_estimate_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    write_profile(tmp_path, linear_profile())
    unknown = dump(system="no_such_gpu")  # estimating it would warn
    profile, source = await startup_profile(convert({**unknown, "profile_results_dir": str(tmp_path)}))
    assert source == str(tmp_path) and profile.prefill == linear_profile().prefill
    reactive = {**{k: v for k, v in unknown.items() if k != "profile_results_dir"}, "optimization_target": "throughput"}
    assert await startup_profile(convert(reactive)) is None
    assert warnings_of(caplog) == []


# ----- the real AIConfigurator through the planner's start-up ------------------------------------------------

def card(role: str) -> ModelDeploymentCard:
    rc = RuntimeConfig(total_kv_blocks=50_000, max_num_seqs=256, max_num_batched_tokens=8192)
    return ModelDeploymentCard(display_name="Qwen/Qwen3-0.6B", slug="qwen", model_path="/m", context_length=8192,
                               kv_cache_block_size=16, worker_type=role, runtime_config=rc)


async def publish_workers(store, namespace: str) -> None:
    for i, (component, role) in enumerate((("VllmPrefillWorker", WorkerType.PREFILL),
                                           ("VllmDecodeWorker", WorkerType.DECODE)), 1):
        eid = EndpointId(namespace, component, "generate")
        await store.put(mdc_key(eid, i), card_record(card(role), namespace, component, "generate", i))


async def seeded_while_responsive(planner: Planner, deadline_s: float) -> tuple[float, float]:
    """Wait for both perf models to take the profile: how long that took, and the longest the event loop
    was unresponsive meanwhile (s)."""
    start = last = time.monotonic()
    worst = 0.0
    while planner._seeded != {"prefill", "decode"}:
        assert last - start < deadline_s, "perf models not seeded in time"
        await asyncio.sleep(0.05)
        now = time.monotonic()
        worst, last = max(worst, now - last), now
    return last - start, worst


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_dynamos_profiler_dump_seeds_the_perf_models_at_start(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    raw = {**dump(), "environment": "virtual", "profile_results_dir": str(tmp_path / "absent")}
    args = from_namespace(PlannerArgs, build_parser(PlannerArgs).parse_args([]), environ={})
    cfg = load_config(json.dumps(raw), args)  # as `python -m dynamo.planner --config JSON` reads it
    store = make_store("file", root=str(tmp_path / "kv"))
    await store.start()
    conn = make_connector(cfg, store=store)
    collector = FpmCollector(store, cfg)
    planner = Planner(cfg, conn, collector, None)
    stop = asyncio.Event()
    task = asyncio.create_task(planner.run(stop))
    try:
        await publish_workers(store, cfg.namespace)
        took, stall = await seeded_while_responsive(planner, 300)
        # The sweep ran off the event loop (on it, one stall would last the whole sweep); a loaded CI machine
        # still delays the loop for the GIL now and then.
        assert planner.initialized and stall < took / 2, (took, stall)
        assert planner.profile[1].startswith("AIConfigurator")
        lim = limits_of(card(WorkerType.DECODE))
        models = collector.models
        assert models["prefill"].ready and models["decode"].ready
        assert sla.prefill_capacity_rps(models["prefill"], 3000, 0.0, lim, cfg.ttft_ms) > 0
        assert sla.decode_capacity_rps(models["decode"], 3000, 150, lim, cfg.itl_ms, 1.0) > 0
        took = [r.getMessage() for r in caplog.records if "AIConfigurator curves for" in r.getMessage()]
        assert len(took) == 1 and " in " in took[0], took
        assert [w for w in warnings_of(caplog) if "no effect here" not in w] == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await collector.close()
        await conn.close()
        await store.close()

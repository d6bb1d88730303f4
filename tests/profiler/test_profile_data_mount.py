"""The profile data a generated DGD carries: rapid + `features.mocker` without a planner still ships
AIConfigurator's curves, and the mockers replay them (`--planner-profile-data`), so their TTFT/ITL follow
the estimates the SLA was judged by (the audit's mockers ran their built-in model); and every reader
finds it at Dynamo's fixed in-container path, never the profiling host's output directory, while
`dynamo.deploy run` maps that path to its local copy of the ConfigMap, for the mockers (an argument)
and for the planner (its env twin, `DYN_PLANNER_PROFILE_RESULTS_DIR`)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from dynamo.deploy import config_maps
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file
from dynamo.llm.perf_data import load_profile
from dynamo.planner.config import PlannerArgs, load_config
from dynamo.profiler import dgdr, pipeline
from dynamo.profiler.aic_curves import estimate_profile
from dynamo.profiler.dgd import PROFILE_MOUNT, Choice, WorkerChoice
from dynamo.profiler.status import Status
from tests.profiler.test_aic_curves import SWEEP, Linear

AGG = Choice("agg", [WorkerChoice("agg", 1, max_num_seqs=64)], "aiconfigurator")


def request(planner: dict | None = None) -> dgdr.Request:
    features = {"mocker": {"enabled": True}, **({"planner": planner} if planner else {})}
    return dgdr.parse({"metadata": {"name": "rm"},
                       "spec": {"model": "Qwen/Qwen3-0.6B", "backend": "vllm", "searchStrategy": "rapid",
                                "hardware": {"gpuSku": "h100_sxm", "totalGpus": 4},
                                "sla": {"ttft": 200, "itl": 10}, "features": features}})


def rapid_mocker(tmp_path, monkeypatch, req: dgdr.Request, choice: Choice):
    """`rapid_search` + `write_final` with AIConfigurator stood in for (pick and estimates)."""
    monkeypatch.setattr(pipeline, "rapid", lambda r, work, model_dir: choice)
    monkeypatch.setattr(pipeline, "rapid_profile", lambda r, c, sweep: estimate_profile(Linear(), c, SWEEP))
    out = tmp_path / "out"
    picked, profile = asyncio.run(pipeline.rapid_search(req, pipeline.Options(output_dir=out),
                                                        Status(out, "rm", "d")))
    return pipeline.write_final(req, picked, profile, out), out


def test_a_rapid_mocker_dgd_without_a_planner_replays_the_estimates(tmp_path, monkeypatch):
    final, out = rapid_mocker(tmp_path, monkeypatch, request(), AGG)
    assert validate_file(final).ok
    cm, dgd = yaml.safe_load_all(final.read_text())
    assert cm["kind"] == "ConfigMap" and set(cm["data"]) == {"prefill_raw_data.json", "decode_raw_data.json"}
    worker = dgd["spec"]["services"]["MockerWorker"]
    args = worker["extraPodSpec"]["mainContainer"]["args"]
    assert args[args.index("--planner-profile-data") + 1] == PROFILE_MOUNT
    assert worker["extraPodSpec"]["volumes"] == [{"name": "profile-data", "configMap": {"name": cm["metadata"]["name"]}}]
    assert "Planner" not in dgd["spec"]["services"]


@pytest.mark.parametrize("planner", [None, {"optimization_target": "sla"}], ids=["mocker", "mocker+planner"])
def test_the_manifest_names_no_host_path_and_run_maps_the_mount_for_every_reader(tmp_path, monkeypatch, planner,
                                                                                 tiny_model):
    final, out = rapid_mocker(tmp_path, monkeypatch, request(planner), AGG)
    text = final.read_text()
    assert str(out.resolve()) not in text and str(tmp_path) not in text
    docs = list(yaml.safe_load_all(text))
    (graph,) = validate_file(final).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ={"PATH": "/usr/bin"}, model=str(tiny_model),
                      config_maps=config_maps.collect(docs), control_url="http://127.0.0.1:1")
    plans = build_plans(graph, opts, {}, devices=[])
    argv = plans["MockerWorker"].launch(0).argv
    local = argv[argv.index("--planner-profile-data") + 1]
    assert local != PROFILE_MOUNT and load_profile(local).decode is not None  # the ConfigMap's local copy
    if planner is None:
        return
    launch = plans["Planner"].launch(0)
    seen = launch.env["DYN_PLANNER_PROFILE_RESULTS_DIR"]
    assert seen != PROFILE_MOUNT and load_profile(seen).prefill is not None
    config = launch.argv[launch.argv.index("--config") + 1]
    assert json.loads(config)["profile_results_dir"] == PROFILE_MOUNT  # the pod's view, as Dynamo writes it
    args = PlannerArgs(config=config, control_url=launch.env["DYN_DEPLOY_CONTROL_URL"], profile_results_dir=seen,
                       prometheus_endpoint="")
    assert load_config(config, args).profile_results_dir == seen  # the planner reads the local copy


def test_in_a_pod_the_env_twin_only_fills_an_unset_profile_dir():
    given = json.dumps({"profile_results_dir": "/data/p"})
    assert load_config(given, PlannerArgs(profile_results_dir=PROFILE_MOUNT)).profile_results_dir == "/data/p"
    assert load_config("{}", PlannerArgs(profile_results_dir=PROFILE_MOUNT)).profile_results_dir == PROFILE_MOUNT

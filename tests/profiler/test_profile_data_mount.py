"""The ConfigMaps a generated DGD mounts, as Dynamo 1.6.1's profiler writes them: the profile data
(`planner-profile-data-*`: rapid + `features.mocker` without a planner still ships AIConfigurator's curves,
and the mockers replay them (`--planner-profile-data`), so their TTFT/ITL follow the estimates the SLA was
judged by) and the planner's config (`planner-config-XXXX`, key `planner_config.json`, which the Planner's
`--config` names at its mount). Every reader finds them at Dynamo's fixed in-container paths, never the
profiling host's output directory; `dynamo.deploy run` maps those paths to its local copies of the
ConfigMaps, for the mockers and the planner (its `--config` file, and the profile through the env twin
`DYN_PLANNER_PROFILE_RESULTS_DIR`, since a path inside the config file is the pod's), and `render` mounts
them in the pods."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from dynamo.deploy import config_maps
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file
from dynamo.llm.perf_data import load_profile
from dynamo.planner.config import PlannerArgs, load_config
from dynamo.profiler import dgdr, pipeline
from dynamo.profiler.aic_curves import estimate_profile
from dynamo.profiler.dgd import PLANNER_CONFIG_MOUNT, PROFILE_MOUNT, Choice, WorkerChoice
from dynamo.profiler.status import Status
from tests.profiler.helpers import comps, flag, graph, main, planner_config, pod
from tests.profiler.test_aic_curves import SWEEP, Linear

AGG = Choice("agg", [WorkerChoice("agg", 1, max_num_seqs=64)], "aiconfigurator")
PLANNER = {"optimization_target": "sla"}


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


def by_name(docs: list[dict], prefix: str) -> dict:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix)]
    return cm


def test_a_rapid_mocker_dgd_without_a_planner_replays_the_estimates(tmp_path, monkeypatch):
    final, out = rapid_mocker(tmp_path, monkeypatch, request(), AGG)
    assert validate_file(final).ok
    cm, dgd = yaml.safe_load_all(final.read_text())
    assert cm["kind"] == "ConfigMap" and set(cm["data"]) == {"prefill_raw_data.json", "decode_raw_data.json"}
    assert dgd["apiVersion"] == "nvidia.com/v1beta1"
    worker = comps(dgd)["MockerWorker"]
    assert flag(main(worker)["args"], "--planner-profile-data") == PROFILE_MOUNT
    name = cm["metadata"]["name"]
    assert pod(worker)["volumes"] == [{"name": name, "configMap": {"name": name}}]
    assert main(worker)["volumeMounts"] == [{"name": name, "mountPath": PROFILE_MOUNT, "readOnly": True}]
    assert "Planner" not in comps(dgd)


def test_the_planners_config_is_a_configmap_mounted_where_its_config_flag_points(tmp_path, monkeypatch):
    final, _ = rapid_mocker(tmp_path, monkeypatch, request(PLANNER), AGG)
    report = validate_file(final)
    assert report.ok, report.lines()
    docs = list(yaml.safe_load_all(final.read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "ConfigMap", "DynamoGraphDeployment"]
    config_cm, profile_cm = by_name(docs, "planner-config-"), by_name(docs, "planner-profile-data-")
    assert docs[:2] == [config_cm, profile_cm]  # Dynamo's order
    assert re.fullmatch(r"planner-config-[0-9a-f]{4}", config_cm["metadata"]["name"])
    assert list(config_cm["data"]) == ["planner_config.json"]
    planner = comps(graph(docs))["Planner"]
    assert main(planner)["args"] == ["--config", f"{PLANNER_CONFIG_MOUNT}/planner_config.json"]
    assert {"name": config_cm["metadata"]["name"], "mountPath": PLANNER_CONFIG_MOUNT,
            "readOnly": True} in main(planner)["volumeMounts"]
    config = planner_config(docs)  # read through the mount, as the pod reads it
    assert config == {"backend": "mocker", "mode": "agg", "optimization_target": "sla", "ttft_ms": 200.0,
                      "itl_ms": 10.0, "profile_results_dir": PROFILE_MOUNT, "model_name": "Qwen/Qwen3-0.6B",
                      "decode_engine_num_gpu": 1}
    assert load_config(json.dumps(config)).profile_results_dir == PROFILE_MOUNT  # the planner's own reading
    again, _ = rapid_mocker(tmp_path / "again", monkeypatch, request(PLANNER), AGG)
    assert again.read_text() == final.read_text()  # digests, not random suffixes: a rerun is byte-identical
    # `dynamo.deploy validate` reads the mounted config as the planner will: an edit it would refuse is an error
    config_cm["data"]["planner_config.json"] = json.dumps({**config, "optimization_target": "fastest"})
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump_all(docs))
    (error,) = validate_file(edited).errors
    assert error.startswith(f"graph rm-dgd, service Planner: planner config {PLANNER_CONFIG_MOUNT}/planner_config.json: "
                            "the planner refuses this config at start:") and "optimization_target" in error


@pytest.mark.parametrize("planner", [None, PLANNER], ids=["mocker", "mocker+planner"])
def test_the_manifest_names_no_host_path_and_run_maps_the_mount_for_every_reader(tmp_path, monkeypatch, planner,
                                                                                 tiny_model):
    final, out = rapid_mocker(tmp_path, monkeypatch, request(planner), AGG)
    text = final.read_text()
    assert str(out.resolve()) not in text and str(tmp_path) not in text
    docs = list(yaml.safe_load_all(text))
    (graph_,) = validate_file(final).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ={"PATH": "/usr/bin"}, model=str(tiny_model),
                      config_maps=config_maps.collect(docs), control_url="http://127.0.0.1:1")
    plans = build_plans(graph_, opts, {}, devices=[])
    argv = plans["MockerWorker"].launch(0).argv
    local = flag(argv, "--planner-profile-data")
    assert local != PROFILE_MOUNT and load_profile(local).decode is not None  # the ConfigMap's local copy
    if planner is None:
        return
    launch = plans["Planner"].launch(0)
    seen = launch.env["DYN_PLANNER_PROFILE_RESULTS_DIR"]
    assert seen != PROFILE_MOUNT and load_profile(seen).prefill is not None
    config = flag(launch.argv, "--config")  # the pod's path to the mounted file, mapped to the local copy
    assert not config.startswith(PLANNER_CONFIG_MOUNT) and Path(config).name == "planner_config.json"
    written = by_name(docs, "planner-config-")["data"]["planner_config.json"]
    assert Path(config).read_text() == written
    assert json.loads(written)["profile_results_dir"] == PROFILE_MOUNT  # the pod's view, as Dynamo writes it
    args = PlannerArgs(config=config, control_url=launch.env["DYN_DEPLOY_CONTROL_URL"], profile_results_dir=seen,
                       prometheus_endpoint="")
    assert load_config(config, args).profile_results_dir == seen  # the planner reads the local copy


def test_rendered_for_kubernetes_the_planner_pod_mounts_both_configmaps(tmp_path, monkeypatch, capsys):
    from dynamo.deploy.__main__ import main as deploy_main

    final, _ = rapid_mocker(tmp_path, monkeypatch, request(PLANNER), AGG)
    assert deploy_main(["render", str(final), "--namespace", "team"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    docs = list(yaml.safe_load_all(final.read_text()))
    for cm in (by_name(docs, "planner-config-"), by_name(docs, "planner-profile-data-")):
        (rendered,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm["metadata"]["name"]]
        assert rendered["data"] == cm["data"] and rendered["metadata"]["namespace"] == "team"
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "rm-dgd-planner"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "main"]
    assert container["args"] == ["--config", f"{PLANNER_CONFIG_MOUNT}/planner_config.json"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {PLANNER_CONFIG_MOUNT, PROFILE_MOUNT}
    assert {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} >= {
        by_name(docs, "planner-config-")["metadata"]["name"], by_name(docs, "planner-profile-data-")["metadata"]["name"]}


def test_in_a_pod_the_env_twin_only_fills_an_unset_profile_dir():
    given = json.dumps({"profile_results_dir": "/data/p"})
    assert load_config(given, PlannerArgs(profile_results_dir=PROFILE_MOUNT)).profile_results_dir == "/data/p"
    assert load_config("{}", PlannerArgs(profile_results_dir=PROFILE_MOUNT)).profile_results_dir == PROFILE_MOUNT

"""What `final_config.yaml` carries beside the graph's layout, as Dynamo 1.6.1's profiler writes it: every
document in the DGD's namespace (an override's too: a pod waits forever for a ConfigMap in another
namespace), the planner's config sized from the chosen engines (GPUs per engine, the model), `envFrom:
hf-token-secret` on the Frontend and every worker (mockers too), the planner's pools opted into the scaling
adapter, and ConfigMap names that are stable per request."""

from __future__ import annotations

import asyncio
import re

import pytest
import yaml

from dynamo.deploy import config_maps
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file
from dynamo.profiler import apply, dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd, final_documents, profile_configmap
from dynamo.profiler.status import Status
from tests.profiler.helpers import comps, graph, main, planner_config

DISAGG = Choice("disagg", [WorkerChoice("prefill", 2), WorkerChoice("decode", 4)], "aiconfigurator")
AGG = Choice("agg", [WorkerChoice("agg", 2, max_num_seqs=32)], "memory-fit")
TOKEN = {"secretRef": {"name": "hf-token-secret"}}


def request(name: str = "r1", namespace: str | None = None, **spec) -> dgdr.Request:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return dgdr.parse({"metadata": meta, "spec": {"model": "Qwen/Qwen3-32B", "backend": "vllm", **spec}})


def with_profile(tmp_path, req: dgdr.Request) -> dict:
    (tmp_path / "prefill_raw_data.json").write_text('{"prefill_isl": [1]}')
    (tmp_path / "decode_raw_data.json").write_text('{"x_kv_usage": [1]}')
    return profile_configmap(req, tmp_path)


@pytest.mark.parametrize("over, namespace", [
    ({"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "metadata": {"namespace": "serving"}},
     "serving"),
    ({"metadata": {"namespace": "serving"}}, "serving"),  # a v1alpha1 deploymentOverrides.namespace lands here
    (None, "team"),  # the request's
])
def test_every_document_goes_where_the_dgd_goes(tmp_path, over, namespace):
    overrides = {"overrides": {"dgd": over}} if over else {}
    req = request(namespace="team", features={"planner": {}}, **overrides)
    docs = final_documents(req, DISAGG, with_profile(tmp_path, req))
    assert [d["kind"] for d in docs] == ["ConfigMap", "ConfigMap", "DynamoGraphDeployment"]
    assert [d["metadata"].get("namespace") for d in docs] == [namespace] * 3
    assert graph(docs)["metadata"]["labels"]["dgdr.nvidia.com/namespace"] == "team"  # the request's, still
    bare = request(features={"planner": {}})
    assert all("namespace" not in d["metadata"] for d in final_documents(bare, DISAGG, with_profile(tmp_path, bare)))


def test_the_planner_counts_the_chosen_engines_gpus_and_knows_the_model(tmp_path):
    config = planner_config(final_documents(request(features={"planner": {}}), DISAGG))
    assert (config["prefill_engine_num_gpu"], config["decode_engine_num_gpu"]) == (2, 4)
    assert config["model_name"] == "Qwen/Qwen3-32B"  # Dynamo: the request's model (the served name)
    agg = planner_config(final_documents(request(features={"planner": {}}), AGG))
    assert agg["decode_engine_num_gpu"] == 2 and "prefill_engine_num_gpu" not in agg
    own = {"decode_engine_num_gpu": 8, "model_name": "served"}  # the user's values win
    mine = planner_config(final_documents(request(features={"planner": own}), DISAGG))
    assert (mine["decode_engine_num_gpu"], mine["prefill_engine_num_gpu"], mine["model_name"]) == (8, 2, "served")
    from dynamo.planner.config import convert

    cfg = convert(config)
    assert (cfg.gpus_for("prefill"), cfg.gpus_for("decode")) == (2, 4)  # what the GPU budget counts


@pytest.mark.parametrize("mocker", [False, True], ids=["vllm", "mocker"])
def test_the_frontend_and_every_worker_get_the_token_secret_as_in_dynamos_templates(tmp_path, mocker):
    req = request(features={"planner": {}, "mocker": {"enabled": mocker}})
    dgd = build_dgd(req, DISAGG)
    for name, comp in comps(dgd).items():
        if name != "Planner":
            assert main(comp)["envFrom"] == [TOKEN], name
    assert "envFrom" not in main(comps(dgd)["Planner"])  # Dynamo's planner component has none


def test_run_starts_a_mocker_graph_with_the_token_secret_that_is_not_here(tmp_path, tiny_model):
    req = request(features={"mocker": {"enabled": True}})
    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump_all(final_documents(req, DISAGG)))
    report = validate_file(path)
    assert report.ok, report.lines()
    (graph_,) = report.graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ={"PATH": "/usr/bin"}, model=str(tiny_model),
                      config_maps=config_maps.collect([]), control_url="http://127.0.0.1:1")
    plans = build_plans(graph_, opts, {}, devices=[])
    assert plans["MockerDecodeWorker"].launch(0).argv  # no Secret here: its keys come from this shell


@pytest.mark.parametrize("choice, planner, scaled", [
    (DISAGG, {}, {"VllmPrefillWorker", "VllmDecodeWorker"}),
    (AGG, {}, {"VllmWorker"}),
    (DISAGG, {"mode": "decode"}, {"VllmDecodeWorker"}),
    (DISAGG, {"mode": "prefill"}, {"VllmPrefillWorker"}),
    (DISAGG, {"advisory": True}, set()),  # Dynamo: an advisory planner scales nothing
    (DISAGG, None, set()),
])
def test_the_pools_the_planner_scales_opt_into_the_scaling_adapter(tmp_path, choice, planner, scaled):
    req = request(features={"planner": planner} if planner is not None else {})
    dgd = build_dgd(req, choice)
    assert {n for n, c in comps(dgd).items() if c.get("scalingAdapter") == {"enabled": True}} == scaled
    assert all("scalingAdapter" not in c for n, c in comps(dgd).items() if n not in scaled)


def test_with_adapters_render_still_hands_the_scaled_deployments_to_our_planner(tmp_path, capsys):
    from dynamo.deploy.__main__ import main as deploy_main

    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump_all(final_documents(request(features={"planner": {}}), DISAGG)))
    report = validate_file(path)
    assert report.ok and report.warnings == [], report.lines()
    assert deploy_main(["render", str(path)]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for scaled in ("r1-dgd-vllmprefillworker", "r1-dgd-vllmdecodeworker"):
        assert "replicas" not in deployments[scaled]["spec"]  # left to the planner
    assert deployments["r1-dgd-frontend"]["spec"]["replicas"] == 1
    (role,) = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "r1-dgd-planner"]
    names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
    assert names == {"r1-dgd-vllmprefillworker", "r1-dgd-vllmdecodeworker"}
    assert not [o for o in objects if "ScalingAdapter" in o["kind"]]  # no operator here, no adapters


def test_the_profile_data_configmap_is_named_per_request_as_dynamo_names_it(tmp_path):
    a, b = with_profile(tmp_path, request("a")), with_profile(tmp_path, request("b"))
    assert a["data"] == b["data"] and a["metadata"]["name"] != b["metadata"]["name"]
    assert re.fullmatch(r"planner-profile-data-[0-9a-f]{4}", a["metadata"]["name"])  # Dynamo: 4 hex characters
    assert with_profile(tmp_path, request("a"))["metadata"]["name"] == a["metadata"]["name"]  # deterministic


class Stopped:
    """A deployment that comes up, then is stopped by the user (`serve_until` returns None)."""

    url, control_url, port = "http://127.0.0.1:1", "http://127.0.0.1:2", None

    async def start(self) -> None:
        pass

    async def serve_until(self, stop) -> None:
        return None

    async def stop(self) -> None:
        pass


def test_after_ctrl_c_the_status_says_the_deployment_is_gone(tmp_path, monkeypatch):
    """Dynamo's operator, when the DGD a DGDR deployed is deleted: phase Failed, the DGD's name cleared, a
    message that it was deleted and how to deploy again. Here: stopped by the user; the profile stays."""
    final = tmp_path / "final_config.yaml"
    final.write_text(yaml.safe_dump_all(final_documents(request(), DISAGG)))
    monkeypatch.setattr(apply, "local_deployment", lambda *a, **k: Stopped())
    status = Status(tmp_path, "r1", "d")
    status.set("Profiling", "Done", message="x", dgdName="r1-dgd")

    class Opts:
        sweep, model_dir, output_dir, run_flags, control_port, frontend_port = (
            type("S", (), {})(), None, tmp_path, [], None, None)
    assert asyncio.run(apply.deploy(request(), final, Opts(), status)) == 0
    saved = yaml.safe_load((tmp_path / "profiler_status.yaml").read_text())
    assert (saved["phase"], saved["status"], saved["profilingPhase"]) == ("Failed", "failed", "Done")
    assert saved["message"].startswith("DGD r1-dgd was stopped") and "dynamo.deploy run" in saved["message"]
    assert saved.get("endpoint") is None and saved.get("control") is None
    assert saved["dgdName"] == "r1-dgd"  # the DGD of final_config.yaml, which the next run deploys again

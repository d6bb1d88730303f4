"""DGDR v1beta1 admission, the DGDs we generate (validated by `dynamo.deploy validate`), picking
from AIConfigurator's tables, the memory-fit fallback, measured selection that never relaxes an
SLA, and the spec freeze once profiling has started."""

from __future__ import annotations

import re

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.llm.perf_data import DecodeProfile, PrefillProfile, Profile
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd, final_documents
from dynamo.profiler.rapid import choice_from_rows, memory_fit
from dynamo.profiler.status import SpecChanged, Status
from dynamo.profiler.thorough import Measured, concurrency_points, select
from tests.profiler.helpers import comps, flag, main, planner_config


def request(**spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r1"}, "spec": {"model": "Qwen/Qwen3-32B", **spec}})


def test_defaults_follow_dynamo():
    req = request()
    s = req.spec
    assert (req.apiVersion, req.kind) == ("nvidia.com/v1beta1", "DynamoGraphDeploymentRequest")
    assert (s.backend, s.searchStrategy, s.autoApply) == ("auto", "rapid", True)
    assert (s.workload.isl, s.workload.osl) == (4000, 1000)
    assert s.sla.targets == (2000.0, 30.0)
    assert dgdr.parse({"model": "m"}).spec.model == "m"  # a bare spec, as Dynamo's --config takes it


@pytest.mark.parametrize("spec, message", [
    ({"model": ""}, "spec.model: required"),
    ({"sla": {"ttft": 100}}, "ttft and itl must be given together"),
    ({"workload": {"concurrency": 4, "requestRate": 2}}, "concurrency or requestRate, not both"),
    ({"hardware": {"gpuSku": "h300"}}, "spec.hardware.gpuSku"),
    ({"searchStrategy": "thorough"}, "needs a concrete backend"),
    ({"workload": {"isl": 0}}, "spec.workload.isl: must be > 0"),
    ({"sla": {"ttft": 1, "itl": 1, "e2eLatency": 5}}, "e2eLatency or ttft/itl"),
    ({"searchStrategy": "fast"}, "searchStrategy"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_requests_name_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        dgdr.parse({"metadata": {"name": "x"}, "spec": {"model": "m", **spec}})


def write_and_validate(tmp_path, docs) -> None:
    """A DGD, or final_config.yaml's documents, as one file that `dynamo.deploy validate` passes."""
    path = tmp_path / "dgd.yaml"
    path.write_text(yaml.safe_dump_all(docs if isinstance(docs, list) else [docs]))
    report = validate_file(path)
    assert report.ok, report.lines()


def test_generated_disagg_vllm_dgd_validates_with_our_layout(tmp_path):
    req = request(backend="vllm", features={"kvRouter": {"enabled": True}},
                  modelCache={"pvcName": "models", "pvcModelPath": "qwen3-32b"})
    choice = Choice("disagg", [WorkerChoice("prefill", 2, replicas=2, max_num_seqs=1),
                               WorkerChoice("decode", 4, max_num_seqs=120)], "aiconfigurator")
    dgd = build_dgd(req, choice)
    write_and_validate(tmp_path, dgd)
    assert (dgd["apiVersion"], dgd["spec"]["backendFramework"]) == ("nvidia.com/v1beta1", "vllm")
    svcs = comps(dgd)
    assert list(svcs) == ["Frontend", "VllmPrefillWorker", "VllmDecodeWorker"]
    assert [c["type"] for c in svcs.values()] == ["frontend", "prefill", "decode"]
    assert main(svcs["Frontend"])["env"] == [{"name": "DYN_ROUTER_MODE", "value": "kv"}]
    pre = svcs["VllmPrefillWorker"]
    args = main(pre)["args"]
    assert args[:2] == ["--model", "/opt/model-cache/qwen3-32b"] and "--served-model-name" in args
    assert flag(args, "--tensor-parallel-size") == "2" and flag(args, "--disaggregation-mode") == "prefill"
    assert main(pre)["resources"] == {"limits": {"nvidia.com/gpu": "2"}} and pre["replicas"] == 2
    assert main(pre)["envFrom"] == [{"secretRef": {"name": "hf-token-secret"}}]
    # the model cache: an existing PVC, mounted where the model path points
    assert pre["podTemplate"]["spec"]["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    assert main(pre)["volumeMounts"] == [{"name": "models", "mountPath": "/opt/model-cache"}]
    assert dgd["metadata"]["name"] == "r1-dgd" and dgd["metadata"]["labels"]["dgdr.nvidia.com/name"] == "r1"


def test_overrides_dgd_merges_and_names(tmp_path):
    req = request(overrides={"dgd": {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
                                     "metadata": {"name": "prod"}, "spec": {"services": {"Frontend": {"replicas": 2}}}}})
    dgd = build_dgd(req, Choice("agg", [WorkerChoice("agg", 1)], "memory-fit"))
    assert dgd["metadata"]["name"] == "prod" and comps(dgd)["Frontend"]["replicas"] == 2
    assert comps(dgd)["Frontend"]["type"] == "frontend" and dgd["apiVersion"] == "nvidia.com/v1beta1"
    write_and_validate(tmp_path, dgd)
    long = dgdr.parse({"metadata": {"name": "x" * 40}, "spec": {"model": "m"}})
    with pytest.raises(ValueError, match="too long"):
        build_dgd(long, Choice("agg", [WorkerChoice("agg", 1)], "memory-fit"))


AGG_ROW = {"tokens/s/gpu": "437.9", "ttft": "296.1", "tpot": "17.6", "request_latency": "9114", "tp": "4", "pp": "1",
           "dp": "1", "bs": "32", "num_total_gpus": "4", "concurrency": "32", "request_rate": "3.5"}
DISAGG_ROW = {"tokens/s/gpu": "471.5", "ttft": "429.5", "tpot": "17.7", "request_latency": "9284", "(p)tp": "2",
              "(p)pp": "1", "(p)dp": "1", "(p)workers": "2", "(p)bs": "1", "(d)tp": "4", "(d)pp": "1", "(d)dp": "1",
              "(d)workers": "1", "(d)bs": "120", "num_total_gpus": "8"}


def test_aiconfigurator_pick_is_sized_and_checked_against_the_sla():
    req = request(backend="vllm", hardware={"gpuSku": "h200_sxm", "totalGpus": 16}, sla={"ttft": 600, "itl": 20})
    choice = choice_from_rows(req, {"agg": [AGG_ROW], "disagg": [DISAGG_ROW]})
    assert choice.mode == "disagg" and choice.sla_met is True
    assert [(w.role, w.tp, w.replicas) for w in choice.workers] == [("prefill", 2, 4), ("decode", 4, 2)]
    assert choice.total_gpus == 16
    tight = request(backend="vllm", hardware={"totalGpus": 8}, sla={"ttft": 300, "itl": 20})
    assert choice_from_rows(tight, {"disagg": [DISAGG_ROW]}).sla_met is False
    planner = request(features={"planner": {"optimization_target": "sla"}}, hardware={"totalGpus": 16})
    assert all(w.replicas == 1 for w in choice_from_rows(planner, {"disagg": [DISAGG_ROW]}).workers)


def test_memory_fit_says_the_sla_is_unverified(tmp_path):
    req = request(model="acme/Llama-70B", hardware={"gpuSku": "h100_sxm", "totalGpus": 8})
    choice = memory_fit(req, None, "AIConfigurator does not cover this model")
    assert choice.sla_met is None and "SLA UNVERIFIED" in choice.notes[0]
    assert choice.workers[0].tp == 4 and choice.workers[0].replicas == 2  # 140 GB of weights on 80 GB GPUs
    write_and_validate(tmp_path, build_dgd(req, choice))


def decode(itl_floor: float) -> DecodeProfile:
    xs, ys, zs, ts = [], [], [], []
    for n in (1, 4, 8):
        xs.append(n * 300 / 10000), ys.append(300.0), zs.append(itl_floor + n), ts.append(n * 1000 / (itl_floor + n))
    return DecodeProfile(xs, ys, zs, ts, max_kv_tokens=10000)


def profile(ttft: float, itl_floor: float) -> Profile:
    return Profile(PrefillProfile([100.0, 500.0], [ttft / 2, ttft * 1.5], [1e5, 1e5]), decode(itl_floor))


def test_measured_selection_sizes_for_load_and_never_relaxes():
    req = request(backend="vllm", workload={"isl": 300, "osl": 1, "concurrency": 12},
                  sla={"ttft": 100, "itl": 12}, hardware={"totalGpus": 8})
    choice, pm, dm = select(req, [Measured(1, profile(60, 5)), Measured(2, profile(40, 8))])
    assert choice.sla_met is True and pm.tp == 1  # both meet TTFT; TP1 has more throughput per GPU
    dec = choice.workers[1]
    assert dec.max_num_seqs in (6, 7) and dec.replicas == 2  # ITL 5+n <= 12 → ~7 per engine; 12 concurrent → 2
    assert choice.workers[0].replicas == 1 and choice.total_gpus == 3
    bad = request(backend="vllm", workload={"isl": 300, "osl": 16}, sla={"ttft": 10, "itl": 2})
    choice, _, _ = select(bad, [Measured(1, profile(60, 5))])
    assert choice.sla_met is False
    assert any("TTFT target 10 ms cannot be met" in n for n in choice.notes)
    assert any("ITL target 2.0 ms cannot be met" in n and "6.00" in n for n in choice.notes)


def test_concurrency_points():
    assert concurrency_points(8, 3) == [1, 4, 8] or concurrency_points(8, 3) == [1, 5, 8]
    assert concurrency_points(1, 6) == [1]


def test_spec_is_immutable_once_profiling_starts(tmp_path):
    a, b = request(), request(workload={"isl": 10})
    st = Status(tmp_path, "r1", dgdr.spec_digest(a))
    st.set("Profiling", "Initializing", message="x")
    assert Status(tmp_path, "r1", dgdr.spec_digest(a)).claim()["phase"] == "Profiling"
    with pytest.raises(SpecChanged, match="immutable"):
        Status(tmp_path, "r1", dgdr.spec_digest(b)).claim()
    saved = yaml.safe_load((tmp_path / "profiler_status.yaml").read_text())
    assert saved["status"] == "running" and saved["phase"] == "Profiling"


def test_planner_feature_adds_the_planner_pointed_at_the_profile(tmp_path):
    req = request(backend="vllm", features={"planner": {"optimization_target": "sla", "ttft": 500}})
    profile = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planner-profile-data-12345678"},
               "data": {"prefill_raw_data.json": "{}"}}
    docs = final_documents(req, Choice("disagg", [WorkerChoice("prefill", 1), WorkerChoice("decode", 1)], "measured"),
                           profile)
    # Dynamo's order: the planner's config, the profile data, then the DGD that mounts both
    assert [d["kind"] for d in docs] == ["ConfigMap", "ConfigMap", "DynamoGraphDeployment"] and docs[1] == profile
    assert re.fullmatch(r"planner-config-[0-9a-f]{4}", docs[0]["metadata"]["name"])  # Dynamo's shape
    assert list(docs[0]["data"]) == ["planner_config.json"]
    planner = comps(docs[-1])["Planner"]
    assert (planner["type"], planner["replicas"]) == ("planner", 1)
    container = main(planner)
    assert container["command"] == ["python3", "-m", "dynamo.planner"]
    assert container["args"] == ["--config", "/workspace/planner_config/planner_config.json"]
    # the pod's path of the profile data, as Dynamo mounts it: nothing of the machine that profiled
    assert planner_config(docs) == {"backend": "vllm", "optimization_target": "sla", "ttft": 500,
                                    "profile_results_dir": "/workspace/profiling_results",
                                    "model_name": "Qwen/Qwen3-32B", "prefill_engine_num_gpu": 1,
                                    "decode_engine_num_gpu": 1}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace/planner_config",
                                                                   "/workspace/profiling_results"}
    write_and_validate(tmp_path, docs)
    # the SLA the user stated is the planner's, except where the planner config sets its own
    stated = request(backend="vllm", sla={"ttft": 300, "itl": 20}, features={"planner": {"ttft": 500}})
    config = planner_config(final_documents(stated, Choice("disagg", [WorkerChoice("prefill", 1),
                                                                      WorkerChoice("decode", 1)], "measured")))
    assert (config["ttft"], config["itl_ms"]) == (500, 20.0) and "ttft_ms" not in config


def test_with_the_planner_the_pick_is_disaggregated_and_an_agg_graph_gets_an_agg_planner(tmp_path):
    # Dynamo's autoscale picking: with the planner on, the disaggregated experiment even where agg
    # has more tokens/s/GPU, since the planner scales prefill and decode apart.
    faster_agg = {**AGG_ROW, "tokens/s/gpu": "900"}
    planner = request(backend="vllm", features={"planner": {"optimization_target": "sla"}})
    assert choice_from_rows(planner, {"agg": [faster_agg], "disagg": [DISAGG_ROW]}).mode == "disagg"
    assert choice_from_rows(request(backend="vllm"), {"agg": [faster_agg], "disagg": [DISAGG_ROW]}).mode == "agg"
    # The memory-fit fallback is aggregated: its planner must scale that one pool, not look for
    # prefill and decode pools the graph does not have (the planner's default mode, disagg).
    choice = memory_fit(planner, None, "AIConfigurator does not cover this model")
    docs = final_documents(planner, choice)
    assert planner_config(docs)["mode"] == "agg"
    write_and_validate(tmp_path, docs)
    stated = request(backend="vllm", features={"planner": {"mode": "decode"}})
    assert planner_config(final_documents(stated, memory_fit(stated, None, "x")))["mode"] == "decode"

"""Rapid profiling with the real AIConfigurator (offline, seconds to a minute on 2 cores):
`dynamo.deploy render` of a DGDR for Qwen/Qwen3-32B on h200_sxm produces a DGD with our layout
that validates and renders; a model AIConfigurator does not know falls back to a memory-fit
config and says loudly that the SLA is unverified; with an SLA planner the DGD carries
AIConfigurator-estimated profile data that the planner's loader seeds its perf models from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.llm.perf_data import DECODE_JSON, PREFILL_JSON
from dynamo.planner.bootstrap import seed_models
from dynamo.planner.config import convert
from dynamo.planner.load_scaling import EngineLimits
from dynamo.planner.perf_model import decode_model, prefill_model
from dynamo.planner.sla import decode_capacity_rps, prefill_capacity_rps
from tests.fixtures.procs import REPO
from tests.profiler.helpers import comps, flag, graph, main, planner_config, pod

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def run(args: list[str], cwd, timeout: float = 540) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def request(name: str, model: str) -> dict:
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest", "metadata": {"name": name},
            "spec": {"model": model, "backend": "vllm", "autoApply": False,
                     "workload": {"isl": 4000, "osl": 500}, "sla": {"ttft": 600, "itl": 20},
                     "hardware": {"gpuSku": "h200_sxm", "totalGpus": 8}}}


def test_rapid_qwen3_32b_on_h200_validates_and_renders(tmp_path):
    (tmp_path / "qwen.yaml").write_text(yaml.safe_dump(request("qwen-rapid", "Qwen/Qwen3-32B")))
    proc = run(["dynamo.deploy", "render", "qwen.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "profiling_results" / "qwen-rapid"
    status = yaml.safe_load((out / "profiler_status.yaml").read_text())
    assert status["phase"] == "Ready" and status["choice"]["source"] == "aiconfigurator"
    assert status["slaMet"] is True and status["choice"]["expected"]["ttft_ms"] <= 600
    report = validate_file(out / "final_config.yaml")
    assert report.ok, report.lines()
    dgd = yaml.safe_load((out / "final_config.yaml").read_text())
    assert dgd["apiVersion"] == "nvidia.com/v1beta1"
    workers = {w["role"]: w for w in status["choice"]["workers"]}
    gpus = 0
    for name, comp in comps(dgd).items():
        if comp["type"] not in ("worker", "prefill", "decode"):
            continue
        role = "agg" if comp["type"] == "worker" else comp["type"]
        assert name == {"agg": "VllmWorker", "prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}[role]
        args = main(comp)["args"]
        assert main(comp)["image"] == "dynamo-serve-cuda:0.1.0"
        assert flag(args, "--tensor-parallel-size") == str(workers[role]["tp"])
        assert main(comp)["resources"]["limits"]["nvidia.com/gpu"] == str(workers[role]["tp"])
        gpus += int(main(comp)["resources"]["limits"]["nvidia.com/gpu"]) * comp["replicas"]
    assert 0 < gpus <= 8
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {d["kind"] for d in rendered}
    assert "Deployment" in kinds and "Service" in kinds, kinds
    images = {c["image"] for d in rendered if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"dynamo-serve-cuda:0.1.0"}


def test_unknown_model_falls_back_to_memory_fit_and_says_so(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(request("unknown", "acme/NotAModel-70B")))
    proc = run(["dynamo.profiler", "--config", "r.yaml", "--output-dir", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SLA UNVERIFIED" in proc.stderr
    status = yaml.safe_load((tmp_path / "out/profiler_status.yaml").read_text())
    assert status["slaMet"] is None and status["choice"]["source"] == "memory-fit"
    assert any("SLA UNVERIFIED" in n for n in status["notes"])
    assert status["choice"]["workers"][0]["tp"] == 2  # 140 GB of 16-bit weights on 141 GB GPUs
    assert validate_file(tmp_path / "out/final_config.yaml").ok


def test_an_sla_no_configuration_meets_goes_ahead_with_the_best_found_as_in_dynamo(tmp_path):
    """Dynamo warns and deploys the best configuration; so do we (status `slaMet: false`, the best achievable
    figures in the notes); `--refuse-unmet-sla` stops there instead (exit 3; the same result reused)."""
    req = request("tight", "Qwen/Qwen3-32B")
    req["spec"]["sla"] = {"ttft": 1, "itl": 1}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(req))
    proc = run(["dynamo.profiler", "--config", "r.yaml", "--output-dir", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "the SLA cannot be met" in proc.stderr
    status = yaml.safe_load((tmp_path / "out/profiler_status.yaml").read_text())
    assert status["slaMet"] is False and any("SLA CANNOT BE MET" in n for n in status["notes"])
    assert validate_file(tmp_path / "out/final_config.yaml").ok
    strict = run(["dynamo.profiler", "--config", "r.yaml", "--output-dir", "out", "--refuse-unmet-sla"], tmp_path)
    assert strict.returncode == 3, strict.stderr[-4000:]
    assert "--refuse-unmet-sla is set" in yaml.safe_load((tmp_path / "out/profiler_status.yaml").read_text())["message"]


def _monotone(values: list[float]) -> bool:
    return all(b >= a for a, b in zip(values, values[1:]))


def test_rapid_with_an_sla_planner_ships_aic_estimated_profile_data_the_planner_loads(tmp_path):
    """Rapid search measures nothing, yet the SLA planner needs engine capacity from the start: the DGD
    carries the profile-data ConfigMap (AIConfigurator's estimates, said so in the notes), mounted at the
    planner's `profile_results_dir`, with physical curves that seed the planner's perf models."""
    req = request("qwen-plan", "Qwen/Qwen3-32B")
    req["spec"]["features"] = {"planner": {"optimization_target": "sla", "enable_throughput_scaling": True,
                                           "throughput_adjustment_interval_seconds": 60}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(req))
    proc = run(["dynamo.profiler", "--config", "r.yaml", "--output-dir", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = yaml.safe_load((tmp_path / "out/profiler_status.yaml").read_text())
    assert any("AIConfigurator estimates, not measurements" in n for n in status["notes"]), status["notes"]
    assert validate_file(tmp_path / "out/final_config.yaml").ok
    docs = list(yaml.safe_load_all((tmp_path / "out/final_config.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("planner-profile-"))
    assert set(cm["data"]) == {PREFILL_JSON, DECODE_JSON}
    planner = comps(graph(docs))["Planner"]
    cfg = planner_config(docs)  # from the planner-config ConfigMap mounted where its --config points
    assert {"name": cm["metadata"]["name"], "configMap": {"name": cm["metadata"]["name"]}} in pod(planner)["volumes"]
    assert {"name": cm["metadata"]["name"], "mountPath": cfg["profile_results_dir"],
            "readOnly": True} in main(planner)["volumeMounts"]

    prefill, decode = json.loads(cm["data"][PREFILL_JSON]), json.loads(cm["data"][DECODE_JSON])
    ttft = [t for _, t in sorted(zip(prefill["prefill_isl"], prefill["prefill_ttft"]))]
    assert len(ttft) >= 8 and _monotone(ttft) and ttft[-1] > ttft[0]  # TTFT grows with ISL
    for ctx in set(decode["y_context_length"]):
        itl = [z for x, y, z in sorted(zip(decode["x_kv_usage"], decode["y_context_length"], decode["z_itl"]))
               if y == ctx]
        assert len(itl) >= 2 and _monotone(itl) and itl[-1] > itl[0], (ctx, itl)  # ITL grows with concurrency

    mount = tmp_path / "mount"  # the ConfigMap as Kubernetes mounts it: one file per key
    mount.mkdir()
    for key, text in cm["data"].items():
        (mount / key).write_text(text)
    pcfg = convert(cfg)
    kw = dict(max_samples=pcfg.max_num_fpm_samples, bucket_size=pcfg.fpm_sample_bucket_size,
              min_samples=pcfg.load_min_observations)
    max_kv = decode["max_kv_tokens"][0]
    lim = EngineLimits(context_length=40960, max_kv_tokens=max_kv, max_num_batched_tokens=8192, max_num_seqs=256)
    models = {"prefill": prefill_model(lim.max_num_batched_tokens, **kw),
              "decode": decode_model(lim.max_num_seqs, lim.max_kv_tokens, **kw)}
    assert seed_models(models, str(mount)) > 0 and all(m.ready for m in models.values())
    assert prefill_capacity_rps(models["prefill"], 4000, 0.0, lim, pcfg.ttft_ms) > 0
    assert decode_capacity_rps(models["decode"], 4000, 500, lim, pcfg.itl_ms) > 0

"""Rapid profiling with the real AIConfigurator (offline, seconds to a minute on 2 cores):
`dynamo.deploy render` of a DGDR for Qwen/Qwen3-32B on h200_sxm produces a DGD with our layout
that validates and renders; a model AIConfigurator does not know falls back to a memory-fit
config and says loudly that the SLA is unverified."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

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
    services = dgd["spec"]["services"]
    workers = {w["role"]: w for w in status["choice"]["workers"]}
    gpus = 0
    for name, svc in services.items():
        if svc["componentType"] != "worker":
            continue
        role = svc.get("subComponentType", "agg")
        assert name == {"agg": "VllmWorker", "prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}[role]
        args = svc["extraPodSpec"]["mainContainer"]["args"]
        assert svc["extraPodSpec"]["mainContainer"]["image"] == "dynamo-serve-cuda:0.1.0"
        assert args[args.index("--tensor-parallel-size") + 1] == str(workers[role]["tp"])
        assert svc["resources"]["limits"]["gpu"] == str(workers[role]["tp"])
        gpus += int(svc["resources"]["limits"]["gpu"]) * svc["replicas"]
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

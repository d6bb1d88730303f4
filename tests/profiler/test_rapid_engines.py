"""Rapid profiling with the real AIConfigurator for SGLang and TRT-LLM (the audit's sglang/trtllm DGDRs
failed: the generated DGD carried vLLM's flags and failed its own validation): an aggregated pick, and a
disaggregated one (a planner on makes rapid pick disagg), each produce a DGD `dynamo.deploy validate`
accepts, with the engine's own batch flag. Seconds per request on 2 cores."""

from __future__ import annotations

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from tests.profiler.helpers import comps, main
from tests.profiler.test_rapid import run

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]
BATCH_FLAG = {"sglang": "--max-running-requests", "trtllm": "--max-batch-size"}


@pytest.mark.parametrize("backend", ["sglang", "trtllm"])
@pytest.mark.parametrize("planner", [None, {"optimization_target": "latency"}], ids=["agg", "disagg"])
def test_rapid_sglang_and_trtllm_dgds_validate(tmp_path, backend, planner):
    spec = {"model": "Qwen/Qwen3-0.6B", "backend": backend, "autoApply": False,
            "workload": {"isl": 1000, "osl": 200}, "sla": {"ttft": 300, "itl": 15},
            "hardware": {"gpuSku": "h200_sxm", "totalGpus": 8}, **({"features": {"planner": planner}} if planner else {})}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"apiVersion": "nvidia.com/v1beta1",
                                                     "kind": "DynamoGraphDeploymentRequest",
                                                     "metadata": {"name": f"r-{backend}"}, "spec": spec}))
    proc = run(["dynamo.profiler", "--config", "r.yaml", "--output-dir", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    final = tmp_path / "out" / "final_config.yaml"
    report = validate_file(final)
    assert report.ok, report.lines()
    dgd = next(d for d in yaml.safe_load_all(final.read_text()) if d["kind"] == "DynamoGraphDeployment")
    workers = {name: c for name, c in comps(dgd).items() if c["type"] in ("worker", "prefill", "decode")}
    roles = sorted(c["type"] for c in workers.values())
    assert roles == (["decode", "prefill"] if planner else ["worker"])
    for comp in workers.values():
        args = main(comp)["args"]
        assert "--max-num-seqs" not in args and BATCH_FLAG[backend] in args, args

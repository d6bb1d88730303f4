"""Deploy by intent, end to end with no GPU: `dynamo.deploy run` of a DGDR with `features.mocker` and
`features.planner` goes through thorough profiling on mocker candidates (each deployed by `dynamo.deploy
run`), writes Dynamo's interpolation files and plots, produces a DGD that validates, deploys it (autoApply)
with mockers replaying the profiled timings and the generated Planner component running (its config says
nothing of the local graph: `run` wires it), and that deployment serves the stated load within the SLA."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.llm.perf_data import load_profile
from dynamo.profiler.client import measure
from tests.fixtures.procs import REPO, free_port, reap, wait_until
from tests.profiler.helpers import comps, flag, graph, main, planner_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
SLA_TTFT, SLA_ITL, ISL, OSL, CONCURRENCY = 800.0, 60.0, 200, 32, 4


def dgdr(model: str) -> dict:
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest",
            "metadata": {"name": "tiny-sla"},
            "spec": {"model": model, "backend": "vllm", "searchStrategy": "thorough", "autoApply": True,
                     "workload": {"isl": ISL, "osl": OSL, "concurrency": CONCURRENCY},
                     "sla": {"ttft": SLA_TTFT, "itl": SLA_ITL}, "hardware": {"gpuSku": "h200_sxm", "totalGpus": 4},
                     "features": {"mocker": {"enabled": True},
                                  # a PlannerConfig as written for a cluster: no environment, no URLs
                                  "planner": {"mode": "disagg", "optimization_target": "sla",
                                              "load_adjustment_interval_seconds": 2,
                                              "throughput_adjustment_interval_seconds": 10}}}}


def status(out) -> dict:
    path = out / "profiler_status.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture
def profiled(tmp_path, tiny_model):
    """`python -m dynamo.deploy run dgdr.yaml`, small sweeps set through `DYN_PROFILER_*`."""
    out = tmp_path / "profiling_results" / "tiny-sla"
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(dgdr("tiny-llama")))
    port = free_port()
    log = open(tmp_path / "profiler.log", "wb")
    sweep = {"PREFILL_INTERPOLATION_GRANULARITY": "4", "DECODE_INTERPOLATION_GRANULARITY": "2", "DECODE_OSL": "32",
             "CONCURRENCY_POINTS": "3", "MAX_CONCURRENCY": "8", "MAX_CONTEXT_LENGTH": "1024"}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **{f"DYN_PROFILER_{k}": v for k, v in sweep.items()},
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamo.deploy", "run", "dgdr.yaml", "--model", str(tiny_model), "--frontend-port",
         str(port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    text = lambda: (tmp_path / "profiler.log").read_text(errors="replace")  # noqa: E731
    try:
        def deployed() -> bool:
            assert proc.poll() is None, f"profiler exited {proc.returncode}:\n{text()[-5000:]}"
            return status(out).get("phase") == "Deployed"
        wait_until(deployed, 300, "DGDR phase Deployed", interval=0.5)
        yield out, port, proc, text
    finally:
        reap(proc, signal.SIGINT, 60)
        log.close()


def test_thorough_mocker_dgdr_profiles_deploys_and_serves_within_sla(profiled):
    out, port, proc, text = profiled
    st = status(out)
    assert st["status"] == "success" and st["slaMet"] is True and st["choice"]["source"] == "measured"
    # Phases were shown live, in order.
    log = text()
    marks = [log.index(f"] {p}") for p in ("Profiling/SweepingPrefill", "Profiling/SweepingDecode", "Ready",
                                           "Deploying", "Deployed")]
    assert marks == sorted(marks), log[-3000:]

    # Interpolation data in Dynamo's layout (NumPy reads it), the plots, and a DGD that validates.
    pre = np.load(out / "selected_prefill_interpolation/raw_data.npz")
    dec = np.load(out / "selected_decode_interpolation/raw_data.npz")
    assert set(pre.files) == {"prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu"} and len(pre["prefill_isl"]) >= 3
    assert set(dec.files) == {"x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens"}
    assert len(set(dec["y_context_length"])) == 2 and (dec["z_itl"] > 0).all()
    for png in ("selected_prefill_interpolation/prefill_ttft_isl.png",
                "selected_decode_interpolation/decode_itl_load.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = validate_file(out / "final_config.yaml")
    assert report.ok, report.lines()
    docs = list(yaml.safe_load_all((out / "final_config.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "ConfigMap", "DynamoGraphDeployment"]  # Dynamo's order
    assert set(docs[1]["data"]) == {"prefill_raw_data.json", "decode_raw_data.json"}
    services = comps(graph(docs))
    assert list(services) == ["Frontend", "MockerPrefillWorker", "MockerDecodeWorker", "Planner"]
    args = main(services["MockerDecodeWorker"])["args"]
    assert flag(args, "--planner-profile-data") == "/workspace/profiling_results"  # the pod's, fixed
    assert load_profile(out).decode is not None

    # The Planner runs in the deployed graph with no hand wiring: local connector through `run`'s control
    # endpoint, pools by subComponentType, perf models seeded from the profile, no Prometheus (said once).
    run_log = lambda: (out / "deployment/deploy-run.log").read_text(errors="replace")  # noqa: E731
    planner_cfg = planner_config(docs)  # the planner-config ConfigMap's planner_config.json
    assert (planner_cfg["ttft_ms"], planner_cfg["itl_ms"]) == (SLA_TTFT, SLA_ITL)  # the DGDR's stated SLA
    wait_until(lambda: "perf models seeded" in run_log() and f"ms vs {SLA_ITL:.0f} ms" in run_log(), 90,
               "the planner seeds its perf models from the profile and judges the DGDR's ITL SLA")
    log = run_log()
    assert "[Planner-0]" in log and "environment 'kubernetes' -> 'local'" in log, log[-3000:]
    assert "pools {'prefill': 'MockerPrefillWorker', 'decode': 'MockerDecodeWorker'}" in log
    assert log.count("no Prometheus configured") == 1
    control = re.findall(r"dynamo\.deploy: running .*?; control (http://127\.0\.0\.1:\d+);", log)[-1]
    with urllib.request.urlopen(control + "/status", timeout=10) as resp:
        (planner,) = [r for r in json.load(resp)["replicas"] if r["service"] == "Planner"]
    assert planner["state"] == "ready" and planner["restarts"] == 0, planner

    # The deployment serves the stated load within the SLA.
    stats = asyncio.run(measure(f"http://127.0.0.1:{port}", "tiny-llama", ISL, OSL, CONCURRENCY, 3 * CONCURRENCY,
                                seed=99, vocab_size=4096, warmup=1))
    assert not stats.errors, stats.errors[:3]
    assert len(stats.ttft_ms) == 3 * CONCURRENCY and stats.output_tokens == 3 * CONCURRENCY * OSL
    assert stats.ttft <= SLA_TTFT and stats.itl <= SLA_ITL, (stats.ttft, stats.itl)

    # Ctrl-C stops the deployment and leaves no worker behind.
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    deadline = time.monotonic() + 10
    while processes_mentioning(str(out.resolve())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(out.resolve())) == []

"""`python -m dynamo.deploy run DGDR.yaml` as a user runs it, end to end on mockers (rapid search falls back to
memory-fit for the tiny model, in about a second): every `run` flag reaches the deployment of the profiled DGD
and its output is the console's (the audit's run dropped them: `scale` could not find its control port, the
planner got no Prometheus); a deployment that cannot start is a failed request (status failed, exit 1, no
traceback) whose profile is kept; `python -m dynamo.profiler` deploys nothing whatever autoApply says; a profile
made on a local stand-in model is not reused for the request's own model; `dynamo.deploy run final_config.yaml`
starts the Planner on its config and profile as the file delivers them, in ConfigMaps mounted into its pod; a
deployment stopped with Ctrl-C leaves a status that says it is gone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import REPO, free_port, http_get, wait_until
from tests.profiler.test_profile_data_mount import AGG, by_name, rapid_mocker
from tests.profiler.test_profile_data_mount import request as mocker_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def dgdr(name: str, **spec) -> dict:
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest", "metadata": {"name": name},
            "spec": {"model": "tiny-llama", "backend": "vllm", "workload": {"isl": 128, "osl": 16},
                     "sla": {"ttft": 2000, "itl": 200}, "features": {"mocker": {"enabled": True}}, **spec}}


def status(tmp: Path, name: str) -> dict:
    return yaml.safe_load((tmp / "profiling_results" / name / "profiler_status.yaml").read_text())


def python_m(tmp: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", *argv], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Prometheus:
    """A stand-in Prometheus (an external service) that records the queries it is sent."""

    def __init__(self) -> None:
        queries = self.queries = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                queries.append(self.path)
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_every_run_flag_reaches_the_deployment_of_the_profiled_dgd(tmp_path, tiny_model):
    planner = {"optimization_target": "sla", "advisory": True, "load_adjustment_interval_seconds": 1,
               "throughput_adjustment_interval_seconds": 2}
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(dgdr("flags", features={
        "mocker": {"enabled": True}, "planner": planner})))
    prom = Prometheus()
    run = DeployRun(tmp_path / "dgdr.yaml", tmp_path, "--model", str(tiny_model), "--set", "MockerWorker.replicas=2",
                    "--namespace", "team-a", "--log-dir", str(tmp_path / "logs"), "--prometheus-endpoint", prom.url,
                    "--append-args", "MockerWorker=--speedup-ratio 10", cwd=tmp_path)
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 2, "Planner": 1}, timeout=150)  # --set, on our control port
        scaled = python_m(tmp_path, "dynamo.deploy", "scale", run.control, "MockerWorker=1", timeout=30)
        assert scaled.returncode == 0, scaled.stderr
        run.wait_ready({"MockerWorker": 1})
        _, body = http_get(run.control + "/prometheus/targets")
        assert {t["labels"]["namespace"] for t in json.loads(body)} == {"team-a"}  # --namespace
        wait_until(lambda: any(q.startswith("/api/v1/query") for q in prom.queries), 60,
                   "the planner's throughput loop queries --prometheus-endpoint")
        assert {"Frontend-0.log", "MockerWorker-0.log", "Planner-0.log"} <= {p.name for p in (tmp_path / "logs").iterdir()}
        console = run.log_path.read_text(errors="replace")  # the inner run's output, as a plain `run` shows it
        assert "dynamo.deploy: running flags-dgd" in console and "SERVICE" in console and "RESTARTS" in console
        assert "speedup 10" in console  # --append-args
        assert "no Prometheus configured" not in console
        # the profiler says so once it has seen every replica ready and the model served (a loaded machine: later)
        wait_until(lambda: status(tmp_path, "flags").get("phase") == "Deployed", 120, "the status to say Deployed")
        st = status(tmp_path, "flags")
        assert (st["phase"], st["status"], st["control"]) == ("Deployed", "success", run.control)
    finally:
        assert run.stop() == 0
        prom.stop()
    assert run.survivors() == []
    # Ctrl-C took the deployment down: said as Dynamo's operator says a deleted DGD, the profile kept for a rerun
    st = status(tmp_path, "flags")
    assert (st["phase"], st["status"], st["profilingPhase"], st["control"]) == ("Failed", "failed", "Done", None)
    assert st["message"].startswith("DGD flags-dgd was stopped by SIGINT: the deployment is gone"), st["message"]


def test_a_deployment_that_cannot_start_is_a_failed_request_and_its_profile_is_kept(tmp_path):
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(dgdr("nocache")))  # autoApply (default); model not cached
    for attempt in ("profiled", "reused"):
        proc = python_m(tmp_path, "dynamo.deploy", "run", "dgdr.yaml", "--frontend-port", str(free_port()))
        assert proc.returncode == 1, (attempt, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr + proc.stdout
        st = status(tmp_path, "nocache")
        assert (st["phase"], st["status"], st["profilingPhase"]) == ("Failed", "failed", "Done")
        assert st["message"].startswith("the deployment of profiling_results/nocache/final_config.yaml did not "
                                        "come up: error: service MockerWorker: model tiny-llama is not in")
        assert "Hugging Face cache" in st["error"]
        assert "[dgdr nocache] Failed: the deployment" in proc.stderr
    assert "reusing profiling_results/nocache/final_config.yaml" in proc.stderr  # the second attempt


def test_the_profiler_deploys_nothing_whatever_auto_apply_says(tmp_path, tiny_model):
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(dgdr("cli", autoApply=True)))
    proc = python_m(tmp_path, "dynamo.profiler", "--config", "dgdr.yaml", "--output-dir", "out", "--model",
                    str(tiny_model), timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = yaml.safe_load((tmp_path / "out/profiler_status.yaml").read_text())
    assert (st["phase"], st["status"]) == ("Ready", "success")
    assert "python -m dynamo.profiler writes the DGD, it deploys nothing" in st["message"]
    assert "`python -m dynamo.deploy run out/final_config.yaml` runs it here" in st["message"]
    assert not (tmp_path / "out/deployment").exists()


def test_a_stand_in_profile_is_not_the_requests_and_a_short_context_is_said(tmp_path, tiny_model):
    spec = dgdr("standin", autoApply=False, workload={"isl": 1800, "osl": 400})  # the tiny model's context: 2048
    (tmp_path / "dgdr.yaml").write_text(yaml.safe_dump(spec))
    local = python_m(tmp_path, "dynamo.deploy", "run", "dgdr.yaml", "--model", str(tiny_model), "--set",
                     "MockerWorker.replicas=1")
    assert local.returncode == 0, local.stderr[-3000:]
    assert "context of 2048 tokens, under the workload's ISL+OSL (2200)" in local.stderr
    assert "autoApply is false: nothing deployed, so --set MockerWorker.replicas=1 did not apply" in local.stderr
    st = status(tmp_path, "standin")
    assert st["modelSource"] == str(tiny_model.resolve()) and any("context of 2048" in n for n in st["notes"])
    assert "run profiling_results/standin/final_config.yaml --set MockerWorker.replicas=1" in st["message"]
    again = python_m(tmp_path, "dynamo.deploy", "run", "dgdr.yaml", "--model", str(tiny_model))
    assert "reusing profiling_results/standin/final_config.yaml" in again.stderr
    cluster = python_m(tmp_path, "dynamo.deploy", "render", "dgdr.yaml")
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert f"was profiled with {tiny_model.resolve()}; profiling again with tiny-llama" in cluster.stderr
    assert status(tmp_path, "standin")["modelSource"] == "tiny-llama"


def test_run_final_config_starts_the_planner_on_its_mounted_config_and_profile(tmp_path, monkeypatch, tiny_model):
    """The Planner's `--config` names the file at the planner-config ConfigMap's mount: `run` serves it from its
    local copy of the ConfigMap, and the planner takes its target and mode from it and seeds its perf models
    from the profile-data ConfigMap's copy (the config's own `profile_results_dir` is the pod's path)."""
    planner = {"optimization_target": "sla", "advisory": True, "load_adjustment_interval_seconds": 1}
    final, _ = rapid_mocker(tmp_path, monkeypatch, mocker_request(planner), AGG)
    written = by_name(list(yaml.safe_load_all(final.read_text())), "planner-config-")["data"]["planner_config.json"]
    run = DeployRun(final, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1, "Planner": 1}, timeout=150)
        (replica,) = run.replicas("Planner")
        argv = Path(f"/proc/{replica['pid']}/cmdline").read_bytes().decode().split("\0")
        config = argv[argv.index("--config") + 1]
        assert Path(config).name == "planner_config.json" and not config.startswith("/workspace/"), argv
        assert Path(config).read_text() == written  # the ConfigMap's key, as the pod would see it
        seeded = re.compile(r"perf models seeded with [1-9]\d* profile points from (\S+)")
        wait_until(lambda: seeded.search(run.log_path.read_text(errors="replace")), 90,
                   "the planner seeds its perf models from the profile-data ConfigMap")
        log = run.log_path.read_text(errors="replace")
        assert "planner: sla target, agg mode, environment local" in log and "(advisory" in log  # from the file
        source = seeded.search(log).group(1)
        assert not source.startswith("/workspace/") and (Path(source) / "prefill_raw_data.json").is_file()
    finally:
        assert run.stop() == 0
    assert run.survivors() == []


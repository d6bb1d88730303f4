"""The graphs a new user brings, run unchanged through `python -m dynamo.deploy run`:
the deployment guide's template (a frontend with only an image, a mocker worker through
`/bin/sh -c ... | tee /tmp/worker.log`, `envFromSecret`, a GPU request, the log-grep
readiness probe), a v1beta1 graph shaped like Dynamo's examples, a model given by its HF
cache path; a multi-node graph is refused; and discovery under the operator's
`DYN_DISCOVERY_BACKEND=kubernetes` works with etcd and fails fast without it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO, free_port, one_error_exit, wait_until
from tests.fixtures.servers import etcd_server  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
DEPLOY = REPO / "examples/backends"
SNAPSHOT = "models--Qwen--Qwen3-0.6B/snapshots/0123456789abcdef0123456789abcdef01234567"


def pods_dir(run: DeployRun) -> Path:
    match = re.search(r"; pods' /tmp (\S+)/<replica>", run.log_path.read_text(errors="replace"))
    assert match, run.log()
    return Path(match.group(1))


def test_guide_template_runs_unchanged_and_its_log_probe_passes(tmp_path, tiny_model):
    run = DeployRun(DEPLOY / "mocker/deploy/guide_template.yaml", tmp_path, "--model", str(tiny_model),
                    env={"HF_TOKEN": "not-needed-by-the-mocker"})
    try:
        # Worker readiness is the guide's probe: grep "Worker.*initialized" /tmp/worker.log.
        run.wait_ready({"Frontend": 1, "MockerWorker": 2}, timeout=120)
        run.wait_workers("tiny-llama", 2)
        reply = chat(run.port, "tiny-llama", "hello from the guide")
        assert reply["choices"][0]["message"]["role"] == "assistant"
        pods = pods_dir(run)
        logs = [(pods / f"MockerWorker-{i}" / "worker.log").read_text() for i in range(2)]
        ids = [re.search(r"Worker mocker-guide\.backend\.generate initialized \(instance ([0-9a-f]+)\)", log)
               for log in logs]
        assert all(ids), logs
        assert ids[0].group(1) != ids[1].group(1)  # each replica its own /tmp/worker.log
        assert run.stop(signal.SIGTERM) == 0
        assert run.survivors() == []
    finally:
        run.stop()


def test_v1beta1_graph_like_dynamos_examples_serves_on_every_replica(tmp_path, tiny_model):
    run = DeployRun(DEPLOY / "mocker/deploy/v1beta1/agg_router.yaml", tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 2}, timeout=120)
        run.wait_workers("tiny-llama", 2)
        for i in range(12):
            chat(run.port, "tiny-llama", f"v1beta1 request {i}: " + "lorem ipsum " * (i % 4 + 1))
        served = [run.requests_total(r) for r in run.replicas("MockerWorker")]
        assert all(n > 0 for n in served), (served, run.status())
        assert run.stop() == 0
    finally:
        run.stop()


def test_model_given_by_hf_snapshot_path_resolves_and_serves(tmp_path, tiny_model):
    hf_home = tmp_path / "hf"
    (hf_home / "hub" / SNAPSHOT).parent.mkdir(parents=True)
    (hf_home / "hub" / SNAPSHOT).symlink_to(tiny_model)
    run = DeployRun(DEPLOY / "mocker/deploy/v1beta1/model_cache.yaml", tmp_path, env={"HF_HOME": str(hf_home)})
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1}, timeout=120)
        run.wait_workers("Qwen/Qwen3-0.6B", 1)
        assert chat(run.port, "Qwen/Qwen3-0.6B", "from the cache")["model"] == "Qwen/Qwen3-0.6B"
        assert run.stop() == 0
    finally:
        run.stop()


def test_multinode_graph_is_refused_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "dynamo.deploy", "run",
                           str(DEPLOY / "vllm/deploy/v1beta1/disagg_multinode.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error: service decode spans 2 nodes per replica" in proc.stderr
    assert "cannot span processes on this machine" in proc.stderr


def start(module: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


@pytest.mark.parametrize("module,args", [
    ("dynamo.mocker", ["--model-path", "MODEL"]),
    ("dynamo.frontend", ["--http-port", "PORT"]),
])
def test_operator_discovery_without_etcd_fails_fast_with_one_line(tiny_model, module, args):
    args = [str(tiny_model) if a == "MODEL" else str(free_port()) if a == "PORT" else a for a in args]
    began = time.monotonic()
    proc = start(module, args, {"DYN_DISCOVERY_BACKEND": "kubernetes",
                                "ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"})
    out, error = one_error_exit(proc)
    # Fast means the first-contact deadline (10 s) plus start-up, not an endless retry; start-up
    # alone can take tens of seconds on a loaded 2-core box, so the bound is generous.
    assert time.monotonic() - began < 150
    assert "after 10s" in out, out
    assert "set ETCD_ENDPOINTS" in error and "kubernetes outside a pod is served through etcd" in error


def test_kubernetes_discovery_with_an_unreachable_api_server_fails_fast_with_one_line(tiny_model):
    """In a pod (POD_NAME) whose API server does not answer: exit 3 after the first-contact deadline."""
    api = f"http://127.0.0.1:{free_port()}"
    proc = start("dynamo.mocker", ["--model-path", str(tiny_model)],
                 {"DYN_DISCOVERY_BACKEND": "kubernetes", "POD_NAME": "w-0", "DYN_KUBE_API_SERVER": api})
    out, error = one_error_exit(proc)
    assert f"the Kubernetes API at {api} was not reachable after 10s" in error, out


def test_operator_discovery_backend_kubernetes_is_served_through_etcd(tiny_model, etcd_server):
    proc = start("dynamo.mocker", ["--model-path", str(tiny_model)],
                 {"DYN_DISCOVERY_BACKEND": "kubernetes", "ETCD_ENDPOINTS": etcd_server, "DYN_NAMESPACE": "k8s"})
    lines: list[str] = []
    try:
        def initialized() -> bool:
            line = proc.stdout.readline()
            lines.append(line)
            assert line or proc.poll() is None, "".join(lines)
            return "Worker k8s.backend.generate initialized" in line
        wait_until(initialized, 60, "worker initialized through etcd", interval=0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

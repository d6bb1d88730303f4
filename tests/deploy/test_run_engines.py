"""`run` and the engines behind Dynamo's worker modules: a vLLM / SGLang / TRT-LLM graph on a Python without
that engine is refused before anything starts (naming the engine and `--engine mocker`), instead of its
workers crash-looping on ModuleNotFoundError; `--engine mocker` runs such a graph on the mocker, under the
served name the manifest implies, with the engine-only flags left out (and said)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from dynamo.deploy.commands import parse_command
from dynamo.deploy.engines import as_mocker
from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO

BACKENDS = REPO / "examples/backends"
ENGINES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", sorted(ENGINES))
def test_a_graph_whose_engine_is_missing_is_refused_before_anything_starts(tmp_path, tiny_model, backend):
    package = ENGINES[backend]
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed for this Python")
    done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "run", str(BACKENDS / backend / "deploy/agg.yaml"),
                           "--model", str(tiny_model), "--frontend-port", "0", "--no-status"],
                          cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the `{package}` package, is not installed" in done.stderr and "--engine mocker" in done.stderr
    assert "Worker-0]" not in done.stdout + done.stderr  # no replica was started


@pytest.mark.parametrize("command, mocker_args, dropped", [
    ("python3 -m dynamo.sglang --model-path Qwen/Qwen3-0.6B --served-model-name qwen --tp 2 "
     "--disaggregation-mode prefill --page-size 16 --disaggregation-bootstrap-port 12345",
     ["--model-path", "Qwen/Qwen3-0.6B", "--model-name", "qwen", "--disaggregation-mode", "prefill", "--block-size",
      "16"], ["--tp", "--disaggregation-bootstrap-port"]),
    ("python3 -m dynamo.trtllm --model-path /models/x --max-num-tokens=8192 --max-batch-size 4 --tensor-parallel-size 2",
     ["--model-path", "/models/x", "--model-name", "/models/x", "--max-num-batched-tokens=8192", "--max-num-seqs",
      "4"], ["--tensor-parallel-size"]),
    ("python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B --is-prefill-worker --block-size 16 --enforce-eager",
     ["--model-path", "Qwen/Qwen3-0.6B", "--model-name", "Qwen/Qwen3-0.6B", "--is-prefill-worker", "--block-size",
      "16"], ["--enforce-eager"]),
])
def test_an_engine_worker_becomes_the_mocker(command, mocker_args, dropped):
    """The model and the name the engine serves it under (its served-name flag, else the model), the flags
    the mocker has (a disaggregation role, the block size), the same quantity under the mocker's name (SGLang's
    page size, TRT-LLM's batch limits), the rest left out."""
    line = parse_command(["/bin/sh", "-c"], [command + " 2>&1 | tee /tmp/worker.log"])
    (inv,) = line.invocations
    assert as_mocker(inv) == dropped
    assert line.render()[2] == " ".join(["python3 -m dynamo.mocker", *mocker_args, "2>&1 | tee /tmp/worker.log"])


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_engine_mocker_serves_a_vllm_disagg_graph(tmp_path, tiny_model):
    run = DeployRun(BACKENDS / "vllm/deploy/disagg_router.yaml", tmp_path, "--model", str(tiny_model),
                    "--engine", "mocker", "--set", "VllmDecodeWorker.replicas=1", "--set", "VllmPrefillWorker.replicas=1")
    try:
        run.wait_ready({"Frontend": 1, "VllmDecodeWorker": 1, "VllmPrefillWorker": 1}, timeout=150)
        run.wait_workers("Qwen/Qwen3-0.6B", 1)  # the name the manifest's vLLM would serve
        reply = chat(run.port, "Qwen/Qwen3-0.6B", "hello", max_tokens=4, timeout=60)
        assert reply["usage"]["completion_tokens"] >= 1
        log = run.log_path.read_text(errors="replace")
        assert "service VllmPrefillWorker: dynamo.vllm runs as dynamo.mocker (--engine mocker); engine flags left " \
               "out: --kv-transfer-config --kv-events-config" in log
        assert "role prefill" in log and "role decode" in log  # the disaggregation roles carried over
        assert run.stop() == 0
        assert run.survivors() == []
    finally:
        run.stop()

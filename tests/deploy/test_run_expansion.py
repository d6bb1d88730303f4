"""`deploy run` of a manifest written for the operator that leans on it: a frontend given only `args`,
a worker whose model path and flags come through `$(VAR)` references, and a moved system port."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.helpers import DeployRun, chat
from tests.deploy.manifests import mocker_graph

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_args_only_frontend_and_referenced_model_serve(tmp_path, tiny_model):
    frontend = {"main": {"args": ["--http-port", "8787", "--router-mode", "round-robin"]}}
    worker = {"envs": [{"name": "MODEL_DIR", "value": str(tiny_model)},
                       {"name": "DYN_SYSTEM_PORT", "value": "9345"}],
              "main": {"args": ["--model-path", "$(MODEL_DIR)", "--model-name", "$(SERVED)",
                                "--speedup-ratio", "$(SPEED)"]}}
    doc = mocker_graph(frontend, worker, graph_envs=[{"name": "SERVED", "value": "tiny-llama"},
                                                     {"name": "SPEED", "value": "10"}])
    manifest = tmp_path / "refs.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    run = DeployRun(manifest, tmp_path)
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1}, timeout=120)
        run.wait_workers("tiny-llama", 1)
        assert chat(run.port, "tiny-llama", "hello")["usage"]["completion_tokens"] >= 1
    finally:
        assert run.stop() == 0, run.log()
    assert not run.survivors()

"""Where `run`'s workers find their model (real `run` processes): `--model` relative to the directory
`run` is started from reaches workers running in another working directory, and a DGD naming a Hugging
Face id (what the profiler writes) serves from this machine's HF cache with no network."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import DeployRun, chat
from tests.deploy.test_run_hub_ids import write_dgd
from tests.fixtures.procs import REPO
from tests.mocker.hf_cache import lay_out_hf_cache

MOCKER = REPO / "examples/backends/mocker/deploy"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_relative_model_dir_reaches_the_workers(tmp_path, tiny_model):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model)
    run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", "models/tiny", cwd=tmp_path)
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1})
        run.wait_workers("tiny-llama", 1)
        assert chat(run.port, "tiny-llama", "hello")["choices"][0]["message"]["content"] is not None
        assert "exited with code" not in run.log(), run.log()
    finally:
        assert run.stop() == 0


def test_run_serves_a_dgd_naming_a_cached_hub_id(tmp_path, tiny_model):
    hub = tmp_path / "hub"
    lay_out_hf_cache(hub, "Qwen/Qwen3-0.6B", tiny_model)
    run = DeployRun(write_dgd(tmp_path), tmp_path, env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1})
        run.wait_workers("Qwen/Qwen3-0.6B", 1)
        assert chat(run.port, "Qwen/Qwen3-0.6B", "hello")["choices"][0]["finish_reason"] in ("length", "stop")
        assert "exited with code" not in run.log(), run.log()
    finally:
        assert run.stop() == 0

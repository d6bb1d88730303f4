"""`run` on a DGD whose workers name a Hugging Face id (what the profiler writes): the id is looked up in
this machine's HF caches as the workers look it up, a model that cannot be had stops `run` before anything
starts, and `--model` takes an id as well as a directory (a relative directory made absolute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamo.deploy import local
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.run import local_model_arg
from dynamo.deploy.validate import validate_file
from tests.mocker.hf_cache import lay_out_hf_cache

DGD = """apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata:
  name: hub-id
spec:
  services:
    Frontend:
      componentType: frontend
      replicas: 1
      extraPodSpec:
        mainContainer:
          image: local
    MockerWorker:
      componentType: worker
      replicas: 1
      extraPodSpec:
        mainContainer:
          image: local
          command: [python3, -m, dynamo.mocker]
          args: [--model-path, Qwen/Qwen3-0.6B, --speedup-ratio, "0"]
"""


def write_dgd(tmp_path: Path) -> Path:
    path = tmp_path / "hub_id.yaml"
    path.write_text(DGD)
    return path


def test_an_id_in_the_workers_cache_is_left_for_them(tmp_path, tiny_model):
    lay_out_hf_cache(tmp_path / "hub", "Qwen/Qwen3-0.6B", tiny_model)
    environ = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path)}
    assert local.local_model("Qwen/Qwen3-0.6B", environ) == "Qwen/Qwen3-0.6B"  # vLLM fetches missing weights


def test_an_id_cached_elsewhere_on_this_machine_becomes_its_snapshot(tmp_path, tiny_model):
    snapshot = lay_out_hf_cache(tmp_path / "home" / "hub", "Qwen/Qwen3-0.6B", tiny_model)
    environ = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    assert local.local_model("Qwen/Qwen3-0.6B", environ) == str(snapshot)


def test_an_id_that_cannot_be_had_stops_run_before_anything_starts(tmp_path):
    (graph,) = validate_file(write_dgd(tmp_path)).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ={"HOME": str(tmp_path), "PATH": "/usr/bin"})
    # tests run with HF_HUB_OFFLINE=1 (tests/conftest.py): the fetch after the cache miss fails at once
    with pytest.raises(ValueError, match=r"MockerWorker: model Qwen/Qwen3-0.6B is not in this machine's Hugging "
                                         r"Face cache .*huggingface-cli download Qwen/Qwen3-0.6B"):
        build_plans(graph, opts, {}, devices=[])


def test_model_arg_relative_dir_becomes_absolute(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "tiny").symlink_to(tiny_model)
    monkeypatch.chdir(tmp_path)
    assert local_model_arg("tiny") == str(tmp_path / "tiny")
    assert local_model_arg("./tiny/") == str(tmp_path / "tiny")


def test_model_arg_that_is_neither_a_path_nor_an_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--model ./nope: no such path"):
        local_model_arg("./nope")
    with pytest.raises(LookupError, match="--model nobody/nothing: no such path; as a Hugging Face id"):
        local_model_arg("nobody/nothing")

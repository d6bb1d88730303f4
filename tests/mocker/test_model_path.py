"""`--model-path` takes a model directory or a Hugging Face model id, as NVIDIA Dynamo's mocker does: an id
resolves in the local HF cache without a network, and one that cannot be had is a clear error."""

from __future__ import annotations

import pytest

from dynamo.mocker.args import resolve_model_dir
from dynamo.worker.hub_cache import cached_snapshot, is_repo_id
from tests.mocker.hf_cache import lay_out_hf_cache


@pytest.mark.parametrize("value", ["Qwen/Qwen3-0.6B", "gpt2", "org/tiny-llama.v2"])
def test_hub_ids(value):
    assert is_repo_id(value)


@pytest.mark.parametrize("value", ["", "/opt/models/x", "./x", "../x", "~/x", "a/b/c", "bad id/x"])
def test_paths_are_not_hub_ids(value):
    assert not is_repo_id(value)


def test_a_directory_is_used_as_is(tiny_model):
    assert resolve_model_dir(str(tiny_model)) == str(tiny_model)


def test_a_cached_id_resolves_to_its_snapshot_without_the_network(tmp_path, tiny_model):
    snapshot = lay_out_hf_cache(tmp_path / "hub", "org/tiny", tiny_model)
    assert cached_snapshot("org/tiny", cache_dir=tmp_path / "hub") == str(snapshot)
    assert cached_snapshot("org/other", cache_dir=tmp_path / "hub") is None


def test_an_id_that_cannot_be_had_is_a_clear_error():
    # tests run with HF_HUB_OFFLINE=1 (tests/conftest.py): the download after the cache miss fails at once
    with pytest.raises(ValueError, match=r"nobody/no-such-model: not in this machine's Hugging Face cache .*"
                                         r"huggingface-cli download nobody/no-such-model"):
        resolve_model_dir("nobody/no-such-model")


@pytest.mark.parametrize("value", ["./no/such/dir", "/no/such/dir"])
def test_a_missing_path_is_not_taken_for_an_id(value):
    with pytest.raises(ValueError, match="neither a model directory nor a Hugging Face model id"):
        resolve_model_dir(value)


def test_a_file_is_not_a_model_dir(tiny_model):
    with pytest.raises(ValueError, match="neither"):
        resolve_model_dir(str(tiny_model / "config.json"))

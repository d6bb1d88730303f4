"""Where LoRA adapters come from: file:// directories, the DYN_LORA_PATH cache for hf:// and
s3://, and clear errors (with the HTTP status the load answers) for what cannot be used."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from dynamo.worker.lora import _resolve_within_deadline, lora_id_of
from dynamo.worker.lora_source import LoraSourceError, resolve_source


def adapter_dir(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def test_file_source_is_used_in_place(tmp_path):
    path = adapter_dir(tmp_path / "my adapter")
    assert resolve_source(path.as_uri()) == path


@pytest.mark.parametrize("uri,status", [
    ("file:///no/such/adapter", 404),
    ("ftp://host/adapter", 400),
    ("hf://", 400),
    ("s3://bucket/adapter", 502),
])
def test_unusable_sources_fail_with_a_status(uri, status, tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    with pytest.raises(LoraSourceError) as err:
        resolve_source(uri)
    assert err.value.status == status and str(err.value)


def test_directory_without_adapter_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoraSourceError, match="adapter_config.json"):
        resolve_source((tmp_path / "empty").as_uri())


def test_remote_sources_already_in_the_cache_need_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    s3 = adapter_dir(tmp_path / "cache" / "s3" / "bucket" / "loras" / "a")
    hf = adapter_dir(tmp_path / "cache" / "hf" / "org" / "adapter")
    assert resolve_source("s3://bucket/loras/a") == s3
    assert resolve_source("hf://org/adapter") == hf


def test_offline_hub_fetch_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoraSourceError, match="Hugging Face Hub") as err:
        resolve_source("hf://no-such-org/no-such-adapter")
    assert err.value.status == 502


def test_lora_ids_are_stable_positive_and_distinct():
    ids = {lora_id_of(f"adapter-{i}") for i in range(1000)}
    assert len(ids) == 1000 and all(0 < i < 2**31 for i in ids)
    assert lora_id_of("x") == lora_id_of("x")



def _hub_stand_in(monkeypatch, fetch):
    """huggingface_hub's documented `snapshot_download(repo_id, revision, local_dir)`, standing in
    for the Hub this machine cannot reach."""
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fetch)


def test_a_fetch_cut_short_leaves_nothing_that_looks_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))

    def half_fetch(repo_id, revision, local_dir):
        adapter_dir(Path(local_dir))  # the config lands first, then the weights fail
        raise ConnectionError("connection reset during adapter_model.safetensors")

    _hub_stand_in(monkeypatch, half_fetch)
    with pytest.raises(LoraSourceError, match="connection reset") as err:
        resolve_source("hf://org/adapter")
    assert err.value.status == 502
    assert list((tmp_path / "cache" / "hf" / "org").iterdir()) == []  # no adapter, no staging left behind


def test_a_complete_fetch_is_cached_for_the_next_load(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    calls = []

    def fetch(repo_id, revision, local_dir):
        calls.append((repo_id, revision))
        adapter_dir(Path(local_dir))

    _hub_stand_in(monkeypatch, fetch)
    slot = tmp_path / "cache" / "hf" / "org" / "adapter@v2"
    assert resolve_source("hf://org/adapter@v2") == slot and (slot / "adapter_config.json").is_file()
    assert resolve_source("hf://org/adapter@v2") == slot and calls == [("org/adapter", "v2")]


def test_a_fetch_past_its_deadline_is_a_504_and_lands_later(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    monkeypatch.setenv("DYN_LORA_FETCH_TIMEOUT_SECS", "0.2")
    release = threading.Event()

    def slow_fetch(repo_id, revision, local_dir):
        assert release.wait(30)
        adapter_dir(Path(local_dir))

    _hub_stand_in(monkeypatch, slow_fetch)
    loop = asyncio.new_event_loop()  # not asyncio.run: it would wait for the fetch thread at exit
    try:
        with pytest.raises(LoraSourceError, match="DYN_LORA_FETCH_TIMEOUT_SECS") as err:
            loop.run_until_complete(_resolve_within_deadline("hf://org/slow"))
    finally:
        release.set()
        loop.close()
    assert err.value.status == 504
    slot = tmp_path / "cache" / "hf" / "org" / "slow"
    deadline = time.monotonic() + 30
    while not (slot / "adapter_config.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resolve_source("hf://org/slow") == slot


def test_a_retry_joins_the_fetch_under_way_instead_of_starting_another(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    monkeypatch.setenv("DYN_LORA_FETCH_TIMEOUT_SECS", "0.2")
    release, calls = threading.Event(), []

    def slow_fetch(repo_id, revision, local_dir):
        calls.append(repo_id)
        assert release.wait(30)
        adapter_dir(Path(local_dir))

    _hub_stand_in(monkeypatch, slow_fetch)

    async def load_twice_then_wait() -> Path:
        for _ in range(2):  # the first load times out (504); its retry times out on the same fetch
            with pytest.raises(LoraSourceError):
                await _resolve_within_deadline("hf://org/shared")
        release.set()
        monkeypatch.setenv("DYN_LORA_FETCH_TIMEOUT_SECS", "30")
        return await _resolve_within_deadline("hf://org/shared")

    assert asyncio.run(load_twice_then_wait()) == tmp_path / "cache" / "hf" / "org" / "shared"
    assert calls == ["org/shared"]


def test_a_slot_left_incomplete_by_an_older_version_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("DYN_LORA_PATH", str(tmp_path / "cache"))
    slot = tmp_path / "cache" / "hf" / "org" / "adapter"
    slot.mkdir(parents=True)
    (slot / "adapter_model.safetensors").write_text("half")  # weights without the config: unusable
    _hub_stand_in(monkeypatch, lambda repo_id, revision, local_dir: adapter_dir(Path(local_dir)))
    assert resolve_source("hf://org/adapter") == slot and (slot / "adapter_config.json").is_file()
    assert not (slot / "adapter_model.safetensors").exists()

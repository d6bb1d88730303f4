"""`run`'s repeated SERVICE=... flags, parsed, and refused naming the flag's form."""

from __future__ import annotations

import pytest

from dynamo.deploy.run_options import parse_append_args, parse_overrides, parse_volumes


def test_append_args_split_as_a_shell_would_and_accumulate_per_service():
    got = parse_append_args(["VllmWorker=--max-model-len 512", "VllmWorker=--seed '1 2'", "Frontend=--http-port 1"])
    assert got == {"VllmWorker": ["--max-model-len", "512", "--seed", "1 2"], "Frontend": ["--http-port", "1"]}
    with pytest.raises(ValueError, match="SERVICE=ARGS"):
        parse_append_args(["=--x"])


def test_overrides_take_only_replicas(tmp_path):
    assert parse_overrides(["Frontend.replicas=2", "a.b.replicas=0"]) == {"Frontend": 2, "a.b": 0}
    for bad in ("Frontend=2", "Frontend.replicas=-1", "Frontend.image=x", "Frontend.replicas=two"):
        with pytest.raises(ValueError, match="SERVICE.replicas=N"):
            parse_overrides([bad])


def test_volumes_must_be_existing_directories(tmp_path):
    assert parse_volumes([f"models={tmp_path}"]) == {"models": str(tmp_path)}
    with pytest.raises(ValueError, match="is not a directory"):
        parse_volumes([f"models={tmp_path / 'nope'}"])
    with pytest.raises(ValueError, match="PVC=DIR"):
        parse_volumes(["models="])

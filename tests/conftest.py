"""Shared fixtures: the tiny model (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynamo.llm.tiny_model import build_tiny_model

# Nothing under test may reach a model hub: this machine (and CI) has no network beyond package
# registries, and a lookup for an unknown model id must fail at once, not try a remote host.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", preset="tiny", weights=False)

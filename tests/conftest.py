"""Shared fixtures: the tiny model (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamo.llm.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", preset="tiny", weights=False)

"""Tests for dynamo.llm (tests mirror the source tree)."""

from pathlib import Path


def tiny_model_dir(tmp_path_factory) -> Path:
    """The shipped tokenizer/config-only tiny model (tests/fixtures/tiny-model), shared by
    every module in the session."""
    from tests.conftest import copy_tiny_model

    return copy_tiny_model(tmp_path_factory.getbasetemp() / "tiny-llama")

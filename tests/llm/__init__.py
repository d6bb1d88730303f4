"""Tests for dynamo.llm (tests mirror the source tree)."""

from pathlib import Path


def tiny_model_dir(tmp_path_factory) -> Path:
    """A tokenizer/config-only tiny model shared by every module in the session.

    Each module calls this from its own module-scoped fixture; the builder's stamp makes
    every call after the first a no-op.
    """
    from dynamo.llm.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-llama", weights=False)

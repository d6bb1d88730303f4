"""`python -m dynamo.trtllm` in a Python without TensorRT-LLM (the main venv): the flags are parsed and
checked as anywhere, then one line says TensorRT-LLM is not installed (exit 2), with no traceback."""

from __future__ import annotations

import importlib.util

import pytest

from tests.fixtures.procs import one_line_refusal, run_module

# Run by the suite's own Python: the main venv, which has no TensorRT-LLM.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None,
                                                  reason="TensorRT-LLM is installed here")]


def test_a_run_without_tensorrt_llm_is_one_line(tmp_path):
    done = run_module("dynamo.trtllm", "--model-path", str(tmp_path), "--disaggregation-mode", "decode")
    one_line_refusal(done, "python -m dynamo.trtllm: error: TensorRT-LLM is not installed")


def test_flags_are_still_checked_first():
    done = run_module("dynamo.trtllm", "--kv-block-size", "0")
    assert done.returncode == 2 and "--kv-block-size must be > 0" in done.stderr
    assert "not installed" not in done.stderr

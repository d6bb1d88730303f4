"""`python -m dynamo.trtllm` in a Python without TensorRT-LLM (the main venv): the flags are parsed and
checked as anywhere, then one line says TensorRT-LLM is not installed (exit 2), with no traceback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Run by the suite's own Python: the main venv, which has no TensorRT-LLM.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None,
                                                  reason="TensorRT-LLM is installed here")]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamo.trtllm", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_a_run_without_tensorrt_llm_is_one_line(tmp_path):
    done = _run("--model-path", str(tmp_path), "--disaggregation-mode", "decode")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m dynamo.trtllm: error: TensorRT-LLM is not installed")
    assert "ModuleNotFoundError" not in done.stderr


def test_flags_are_still_checked_first():
    done = _run("--kv-block-size", "0")
    assert done.returncode == 2 and "--kv-block-size must be > 0" in done.stderr
    assert "not installed" not in done.stderr

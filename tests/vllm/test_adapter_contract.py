"""The engine-adapter contract suite (tests/worker/test_adapter_contract.py) run against the
REAL vLLM engine: the suite runs in the vLLM venv with DYN_ADAPTER_SUITE_ENGINES=vllm,
driving `VllmAdapter` over an in-process AsyncLLM (CPU build) on the tiny model with weights.
vLLM's prefill/decode roles are covered end to end by test_disagg_nixl.py and test_disagg_tcp.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.fixtures.procs import REPO
from tests.vllm.conftest import ENGINE_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow]


def test_vllm_adapter_passes_the_contract_suite(vllm_python, vllm_model):
    env = {**os.environ, **ENGINE_ENV, "PYTHONPATH": str(REPO), "DYN_ADAPTER_SUITE_ENGINES": "vllm",
           "DYN_ADAPTER_SUITE_MODEL": str(vllm_model)}
    proc = subprocess.run([str(vllm_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=600",
                           "tests/worker/test_adapter_contract.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert "8 passed" in proc.stdout, tail  # 7 contract tests for the agg role, and priority order

"""The FPM stat logger inside vLLM's own stat-logger interface (vLLM venv, no engine): a new engine
reports itself idle at once, so that the planner counts it among the engines reporting FPMs before
its first request (a silent new replica holds its pool: `worker_count_mismatch`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.fixtures.procs import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

SCRIPT = """
import asyncio
from dynamo.vllm.forward_pass import fpm_stat_logger_factory

async def main():
    pushed = []
    logger = fpm_stat_logger_factory(pushed.append, "w1", lambda: 1000)(None, engine_index=2)
    logger.log_engine_initialized()  # what AsyncLLM calls once the engine is up
    await asyncio.sleep(0.05)
    assert len(pushed) == 1 and pushed[0].idle and pushed[0].dp_rank == 2, pushed
    print("ok")

asyncio.run(main())
"""


def test_a_started_engine_reports_itself_idle_before_its_first_request(vllm_python):
    proc = subprocess.run([str(vllm_python), "-c", SCRIPT], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]

"""The mocker launch scripts start their graph, serve OpenAI requests, and leave no
process behind when stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.deploy.helpers import chat, group_members
from tests.fixtures.procs import REPO, free_port, http_get, wait_until

LAUNCH = REPO / "examples/backends/mocker/launch"
WORKERS = {"agg": 1, "agg_router": 2, "disagg": 2, "disagg_router": 4, "global_router": 1}  # the frontend sees the global router only
PROCESSES = {"global_router": 5}  # ports: the pools' mockers and routers, the global router
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.mark.parametrize("script", sorted(WORKERS))
def test_mocker_launch_script_serves(tmp_path, tiny_model, script):
    port = free_port()
    env = {**os.environ, "PYTHON": sys.executable, "MODEL_PATH": str(tiny_model), "HTTP_PORT": str(port),
           "SYSTEM_PORT": str(free_port("0.0.0.0", count=PROCESSES.get(script, WORKERS[script])))}
    log = open(tmp_path / f"{script}.log", "wb")
    proc = subprocess.Popen(["bash", str(LAUNCH / f"{script}.sh")], env=env, cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    def output(tail: int = 4000) -> str:
        # the whole log for the prefix checks: a busy start (pools, routers) can push the
        # first [frontend] line out of any fixed tail
        text = (tmp_path / f"{script}.log").read_text(errors="replace")
        return text[-tail:] if tail else text

    try:
        def workers() -> int:
            assert proc.poll() is None, output()
            status, body = http_get(f"http://127.0.0.1:{port}/health")
            return len(json.loads(body).get("instances", [])) if status == 200 else 0
        wait_until(lambda: workers() >= WORKERS[script], 60, f"{script} workers")
        for i in range(4):
            reply = chat(port, "tiny-llama", f"hello {i}")
            assert reply["usage"]["completion_tokens"] >= 1
        whole = output(tail=0)
        assert "[frontend]" in whole and "[Mocker" in whole, output()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            log.close()
    wait_until(lambda: not group_members({proc.pid}), 10, "launch script processes to exit")

"""`launch/quickstart.sh` (the README's first command) serves the tiny model: it builds the
model, starts a frontend and a mocker, answers a streamed chat through the official
`openai` client, and leaves no process behind when stopped.

It runs the repository's own `.venv` (the script's `scripts/setup.sh` is a no-op once
`scripts/test.sh` has set it up; a stale or missing `.venv` skips locally, fails under CI)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess

import openai
import pytest

from tests.fixtures.procs import REPO, free_port, http_get, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def venv_is_current() -> bool:
    stamp = REPO / ".venv" / ".dynamo-installed"
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip() == want


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_quickstart_serves_and_stops_cleanly(tmp_path):
    if not venv_is_current():
        pytest.skip("no up-to-date .venv: run scripts/setup.sh (scripts/test.sh does)")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MODEL_PATH": str(tmp_path / "model"), "DYN_FILE_KV": str(tmp_path / "kv"),
           "SPEEDUP": "100"}
    env.pop("PYTHONPATH", None)  # the script's own venv and checkout, as a user runs it
    log_path = tmp_path / "quickstart.log"
    with open(log_path, "wb") as log:
        # As from a terminal: SIGINT at its default even when this suite runs with it ignored (started in the
        # background by a non-interactive shell, or under nohup); a shell cannot trap a signal it inherits ignored.
        proc = subprocess.Popen(["bash", str(REPO / "launch/quickstart.sh")], env=env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    output = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        wait_until(lambda: proc.poll() is None and "is serving model" in output(), 180, "quickstart banner")
        assert b'"tiny"' in http_get(f"http://127.0.0.1:{port}/v1/models")[1], output()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello!"}],
                                                     max_tokens=8, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].usage.completion_tokens >= 1
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert (tmp_path / "model" / "tokenizer.json").is_file()
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as the banner says
        assert proc.wait(30) is not None
        wait_until(lambda: not group_alive(proc.pid), 20, "frontend and mocker to exit with the script")
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

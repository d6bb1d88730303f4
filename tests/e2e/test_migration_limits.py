"""Migration at and past its limit: `--migration-limit N` moves a request at most N times;
one more worker loss ends the stream with an OpenAI error event (`worker_disconnected`)
and no hang; the default limit is 0; a non-streaming request migrates too; a structured-output request with
output already is not moved (its grammar would restart on the new worker), as in Dynamo.
Each test starts its own two mockers, slowed so a request is still running when killed."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.fixtures.load import sse_chunks
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
MAX_TOKENS = 400


def make_cluster(model, tmp, *frontend_args: str) -> Cluster:
    c = Cluster(tmp, model, "file")
    c.workers = [c.mocker("--speedup-ratio", "0.5") for _ in range(2)]  # type: ignore[attr-defined]
    c.frontend_proc = c.frontend(*frontend_args)  # type: ignore[attr-defined]
    c.wait_workers(MODEL, 2)
    return c


def inflight(proc) -> float:
    if not proc.alive():
        return 0.0
    return metric_value(http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode(),
                        "dynamo_component_inflight_requests") or 0.0


def kill_the_busy_worker(cluster):
    """SIGKILL the worker that is running our request (waits until one is)."""
    busy = []
    wait_until(lambda: busy.append(next((w for w in cluster.workers if inflight(w) == 1), None)) or busy[-1],
               30, "a worker running the request")
    busy[-1].kill()
    return busy[-1]


def stream_with_one_kill(cluster, body: dict, after: int = 10) -> tuple[list[str], list[str], dict | None, object]:
    """Stream the completion `body` (no error event allowed) and SIGKILL the worker running it once `after`
    text pieces arrived: (text pieces, finish reasons, usage, the killed worker or None)."""
    pieces, finish, usage, killed = [], [], None, None
    for chunk in sse_chunks(cluster.base_url, body):
        assert "error" not in chunk, chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            pieces.append(choice["text"])
            if choice["finish_reason"]:
                finish.append(choice["finish_reason"])
        if killed is None and len(pieces) >= after:
            killed = kill_the_busy_worker(cluster)  # polls: the metric may lag the stream
    return pieces, finish, usage, killed


def migrations(cluster) -> float:
    return metric_value(http_get(cluster.base_url + "/metrics")[1].decode(), "dynamo_frontend_model_migration_total",
                        {"migration_type": "ongoing_request"}) or 0.0


def stream_killing(cluster, kills: int) -> tuple[list[str], list[dict]]:
    """Stream one completion, killing the serving worker after 5 chunks, `kills` times."""
    body = {"model": MODEL, "prompt": "migrate me", "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True}
    texts, errors, since_kill, done = [], [], 0, kills
    for chunk in sse_chunks(cluster.base_url, body):
        if "error" in chunk:
            errors.append(chunk["error"])
            continue
        texts += [c["text"] for c in chunk["choices"]]
        since_kill += 1
        if done and since_kill >= 5:
            kill_the_busy_worker(cluster)
            done, since_kill = done - 1, 0
    return texts, errors


def test_one_migration_then_the_limit_ends_the_stream_with_an_error(tiny_model, tmp_path):
    c = make_cluster(tiny_model, tmp_path, "--migration-limit", "1")
    try:
        started = time.monotonic()
        texts, errors = stream_killing(c, kills=2)
        assert [e["code"] for e in errors] == ["worker_disconnected"], errors
        assert errors[0]["message"] and errors[0]["type"]
        assert 10 <= len(texts) < MAX_TOKENS  # tokens from both workers, then the error: no hang, no silent end
        assert migrations(c) == 1
        assert time.monotonic() - started < 100
    finally:
        c.stop()


def test_default_limit_is_zero(tiny_model, tmp_path):
    c = make_cluster(tiny_model, tmp_path)
    try:
        texts, errors = stream_killing(c, kills=1)
        assert [e["code"] for e in errors] == ["worker_disconnected"], errors
        assert migrations(c) == 0
        survivor = next(w for w in c.workers if w.alive())
        assert inflight(survivor) == 0  # the request was not moved there
    finally:
        c.stop()


def test_non_streaming_request_migrates(tiny_model, tmp_path):
    c = make_cluster(tiny_model, tmp_path, "--migration-limit", "1")
    try:
        body = {"model": MODEL, "prompt": "migrate me", "max_tokens": MAX_TOKENS, "ignore_eos": True}
        with httpx.Client(timeout=120) as client:
            result = {}
            sender = threading.Thread(target=lambda: result.update(resp=client.post(
                c.base_url + "/v1/completions", json=body)))
            sender.start()
            kill_the_busy_worker(c)
            sender.join(120)
        resp = result["resp"]
        assert resp.status_code == 200, resp.text
        assert resp.json()["usage"]["completion_tokens"] == MAX_TOKENS
        assert resp.json()["choices"][0]["finish_reason"] == "length"
        assert migrations(c) == 1
    finally:
        c.stop()


def test_a_request_past_the_migration_max_seq_len_is_not_moved(tiny_model, tmp_path):
    """--migration-max-seq-len (Dynamo's): prompt + 5 generated tokens already exceed 4, so the
    worker's loss ends the stream with the error despite migrations left."""
    c = make_cluster(tiny_model, tmp_path, "--migration-limit", "3", "--migration-max-seq-len", "4")
    try:
        texts, errors = stream_killing(c, kills=1)
        assert [e["code"] for e in errors] == ["worker_disconnected"], errors
        assert migrations(c) == 0 and 5 <= len(texts) < MAX_TOKENS
        text = http_get(c.base_url + "/metrics")[1].decode()
        assert metric_value(text, "dynamo_frontend_model_migration_max_seq_len_exceeded_total", {"model": MODEL}) == 1
    finally:
        c.stop()


def test_a_structured_output_request_with_output_is_not_moved(tiny_model, tmp_path):
    c = make_cluster(tiny_model, tmp_path, "--migration-limit", "3")
    try:
        body = {"model": MODEL, "prompt": "as json", "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True,
                "guided_json": {"type": "object"}}
        texts, errs, killed = [], [], False
        for chunk in sse_chunks(c.base_url, body):
            if "error" in chunk:
                errs.append(chunk["error"])
                continue
            texts += [ch["text"] for ch in chunk["choices"]]
            if not killed and len(texts) >= 5:
                kill_the_busy_worker(c)
                killed = True
        assert [e["code"] for e in errs] == ["worker_disconnected"], errs
        assert migrations(c) == 0 and 5 <= len(texts) < MAX_TOKENS
        assert "uses structured output and has output already: not migrated" in c.frontend_proc.log()
    finally:
        c.stop()

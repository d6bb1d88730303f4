"""Big answers and clients that do not keep up, end to end (frontend + mocker, real sockets):
- a stream whose client does not read is cancelled at its worker once what waits for it passes the backlog
  bound (`client_backlog.py`), while the frontend keeps answering others, its memory bounded; read at last,
  it ends with an error event saying so;
- a large unary answer (n x tokens x top_logprobs over `LARGE_ANSWER_ENTRIES`) goes out in pieces
  (chunked) and is complete, valid JSON: what the same request streamed says."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from dynamo.frontend.client_backlog import STREAM_BACKLOG_MB
from dynamo.frontend.unary_answer import LARGE_ANSWER_ENTRIES
from tests.fixtures.procs import http_get, metric_value, mocker_cluster, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
OUTPUT_BYTES_PER_TOKEN = 300  # a worker's output with 20 top logprobs, as it travels (msgpack)


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    # slow enough that the generation outlasts the time its output takes to pass the bound
    # and a bound under the default (16 MiB), set as a deployment would: the setting reaches the request path
    with mocker_cluster(tmp_path_factory.mktemp("backlog"), tiny_model, "--speedup-ratio", "2",
                        extra_env={"DYN_HTTP_STREAM_BACKLOG_LIMIT_MB": "4"}) as c:
        yield c


def _metric(url: str, name: str, labels: dict | None = None) -> float:
    return metric_value(http_get(url + "/metrics")[1].decode(), name, labels) or 0.0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _non_reader(port: int, body: dict) -> socket.socket:
    """A client with a 4 KiB receive window that sends its request and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return sock


def _read_to_the_end(sock: socket.socket) -> bytes:
    """Everything up to the stream's `data: [DONE]`; the last 64 KiB of it."""
    sock.settimeout(30)
    tail = b""
    while b"data: [DONE]" not in tail:
        data = sock.recv(1 << 20)
        assert data, "the stream ended without its [DONE]"
        tail = (tail + data)[-65536:]
    return tail


def test_a_stream_nobody_reads_is_cancelled_at_its_worker_and_others_are_served(cluster):
    n, max_tokens = 64, 2000
    assert n * max_tokens * OUTPUT_BYTES_PER_TOKEN > 2 * STREAM_BACKLOG_MB * 2**20  # enough to pass the bound
    worker = f"http://127.0.0.1:{cluster.procs[0].system_port}"
    frontend = cluster.procs[1]
    rss_before = _rss_mb(frontend.pid)
    sock = _non_reader(cluster.http_port, {
        "model": MODEL, "messages": [{"role": "user", "content": "a long story"}], "stream": True, "n": n,
        "max_tokens": max_tokens, "logprobs": True, "top_logprobs": 20, "temperature": 1.0, "ignore_eos": True})
    try:
        wait_until(lambda: _metric(cluster.base_url, "dynamo_frontend_model_cancellation_total") >= 1, 60,
                   "the frontend to cut the stream")
        # every choice's worker stream was told to stop: the engine frees them, long before max_tokens
        wait_until(lambda: _metric(worker, "dynamo_component_cancellation_total") >= n, 30,
                   "the worker to see each choice cancelled")
        wait_until(lambda: _metric(worker, "vllm:num_requests_running") == 0, 30, "the engine to be idle")
        assert "fell too far behind" in frontend.log()
        assert _rss_mb(frontend.pid) - rss_before < 4 * STREAM_BACKLOG_MB + 150  # bounded, not the whole answer
        started = time.monotonic()
        answer = cluster.openai_client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.choices[0].finish_reason == "length" and time.monotonic() - started < 10
        tail = _read_to_the_end(sock)  # reading at last: what was sent, then the error event the stream ends with
        error = json.loads(tail.rsplit(b"data: ", 2)[1].split(b"\n\n")[0])["error"]
        assert error["code"] == "stream_backlog_exceeded" and "fell too far behind" in error["message"]
    finally:
        sock.close()
    assert _metric(cluster.base_url, "dynamo_frontend_model_cancellation_total") == 1  # one request, counted once


def test_a_large_unary_answer_is_chunked_complete_json_and_the_streamed_answer(cluster):
    n, max_tokens, top = 12, 160, 20
    assert n * max_tokens * (1 + top) > LARGE_ANSWER_ENTRIES
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "list ideas"}], "n": n, "seed": 9,
           "max_tokens": max_tokens, "logprobs": True, "top_logprobs": top, "ignore_eos": True}
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=120)
    conn.request("POST", "/v1/chat/completions", json.dumps(ask), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("transfer-encoding") == "chunked"
    unary = json.loads(resp.read())
    conn.close()
    assert unary["object"] == "chat.completion" and unary["usage"]["completion_tokens"] == n * max_tokens
    kwargs = {k: v for k, v in ask.items() if k != "ignore_eos"}
    streamed = cluster.openai_client().chat.completions.create(**kwargs, stream=True, extra_body={"ignore_eos": True})
    tokens: dict[int, list] = {}
    for chunk in streamed:
        for ch in chunk.choices:
            if ch.logprobs:
                tokens.setdefault(ch.index, []).extend((i.token, i.logprob, len(i.top_logprobs))
                                                       for i in ch.logprobs.content)
    assert [c["index"] for c in unary["choices"]] == list(range(n))
    for choice in unary["choices"]:
        content = choice["logprobs"]["content"]
        assert "".join(i["token"] for i in content) == choice["message"]["content"]
        assert [(i["token"], i["logprob"], len(i["top_logprobs"])) for i in content] == tokens[choice["index"]]


def test_a_large_unary_completion_is_complete_and_its_offsets_run_on(cluster):
    n, max_tokens, top = 16, 300, 5
    assert n * max_tokens * (1 + top) > LARGE_ANSWER_ENTRIES
    resp = cluster.openai_client().completions.create(model=MODEL, prompt="Once upon a time", n=n,
                                                      max_tokens=max_tokens, logprobs=top, seed=4,
                                                      extra_body={"ignore_eos": True})
    assert len(resp.choices) == n
    for choice in resp.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == max_tokens
        assert "".join(lp.tokens) == choice.text
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(max_tokens)]

"""A real frontend under its write deadline (`--http-write-timeout-secs`): a client that asks for a big
answer, then neither reads nor hangs up, has its connection dropped once it has taken nothing for the
deadline: its request ends as for a client that hung up (out of `dynamo_frontend_inflight_requests`,
counted in `..._disconnected_clients` and `..._http_refusals_total{reason="write_timeout"}`), and others
are served meanwhile; a client that reads slowly but steadily gets its whole stream."""

from __future__ import annotations

import json
import socket
import time

import pytest

from dynamo.frontend.unary_answer import LARGE_ANSWER_ENTRIES
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

WRITE_TIMEOUT = 3.0  # short for the test; long against the slow reader's gaps (well under a second)
GENEROUS = 60.0  # bounds only a hang breaks, on a loaded 2-core box
# Streamed: n x max_tokens x (1 + top_logprobs) SSE entries, MiBs against a 4 KiB receive window, yet
# under the stream backlog bound (16 MiB of worker output): only the write deadline can end it.
STREAM = {"model": "tiny", "messages": [{"role": "user", "content": "a long story"}], "stream": True, "n": 8,
          "max_tokens": 1000, "logprobs": True, "top_logprobs": 5, "ignore_eos": True}
# Unary: ~13 MB of JSON sent in pieces, more than the kernel's send buffer takes (a smaller answer is all
# handed to the kernel at once: the request is over, the connection idle, keep-alive's to close).
UNARY = {**STREAM, "stream": False, "n": 16, "max_tokens": 400, "top_logprobs": 20}
assert UNARY["n"] * UNARY["max_tokens"] * (1 + UNARY["top_logprobs"]) > 5 * LARGE_ANSWER_ENTRIES


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("write_deadline"), tiny_model)
    try:
        c.mocker("--speedup-ratio", "20")
        c.frontend("--http-write-timeout-secs", str(WRITE_TIMEOUT))
        c.wait_workers("tiny", 1)
        yield c
    finally:
        c.stop()


def metric(cluster: Cluster, name: str, labels: dict | None = None) -> float:
    status, body = http_get(cluster.base_url + "/metrics")
    assert status == 200
    return metric_value(body.decode(), name, labels) or 0.0


def write_timeouts(cluster: Cluster) -> float:
    return metric(cluster, "dynamo_frontend_http_refusals_total", {"reason": "write_timeout"})


def ask(cluster: Cluster, body: dict) -> socket.socket:
    """A client with a 4 KiB receive window that has sent its request and read nothing yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(GENEROUS)
    sock.connect(("127.0.0.1", cluster.http_port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """The last 64 KiB read before the server closed the connection (EOF or reset)."""
    tail = b""
    try:
        while chunk := sock.recv(1 << 20):
            tail = (tail + chunk)[-65536:]
    except ConnectionError:
        pass
    return tail


@pytest.mark.parametrize("body", [STREAM, UNARY], ids=["stream", "unary"])
def test_a_client_that_stops_reading_is_dropped_and_its_request_ends(cluster, body):
    before, gone_before = write_timeouts(cluster), metric(cluster, "dynamo_frontend_disconnected_clients")
    sock = ask(cluster, body)
    try:
        answer = cluster.openai_client().chat.completions.create(  # served meanwhile
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.choices[0].finish_reason == "length"
        wait_until(lambda: write_timeouts(cluster) == before + 1, GENEROUS, "the stalled connection to be dropped")
        wait_until(lambda: metric(cluster, "dynamo_frontend_inflight_requests") == 0, GENEROUS,
                   "its request to end")
        assert metric(cluster, "dynamo_frontend_disconnected_clients") == gone_before + 1  # as a hang-up is
        tail = read_until_closed(sock)  # reading at last: the connection is gone, the answer cut short
        assert b"data: [DONE]" not in tail and not tail.endswith(b"0\r\n\r\n")
    finally:
        sock.close()


def test_a_client_that_reads_slowly_but_steadily_gets_its_whole_stream(cluster):
    before = write_timeouts(cluster)
    body = {**STREAM, "n": 4}
    with ask(cluster, body) as sock:
        end = time.monotonic() + 3 * WRITE_TIMEOUT
        while time.monotonic() < end:  # 4 KiB every 0.25 s: the server's buffers stay full all along
            assert sock.recv(4096)
            time.sleep(0.25)
        tail = b""
        while b"data: [DONE]" not in tail:
            chunk = sock.recv(1 << 20)
            assert chunk, "the stream was cut"
            tail = (tail + chunk)[-65536:]
    assert write_timeouts(cluster) == before

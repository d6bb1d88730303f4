"""A real frontend under its HTTP connection limits (flags and DYN_* twins): slow heads and
bodies get 408 and are closed, an oversized head 431 (a long URL 414) while chat keeps being
served, a connection beyond --http-connection-limit 503 while the open ones keep working, and
each refusal is counted in `dynamo_frontend_http_refusals_total{reason}`."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import httpx
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value

pytestmark = pytest.mark.e2e

CONNECTION_LIMIT = 6
GENEROUS = 20.0  # bounds only a hang breaks, on a loaded 2-core box
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("http_limits"), tiny_model)
    try:
        c.mocker("--speedup-ratio", "100")
        c.frontend("--http-header-timeout-secs", "1", "--http-body-timeout-secs", "1",
                   env={"DYN_HTTP_CONNECTION_LIMIT": str(CONNECTION_LIMIT)})
        c.wait_workers("tiny", 1)
        yield c
    finally:
        c.stop()


def connect(cluster: Cluster) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cluster.http_port), timeout=GENEROUS)


def read_answer(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionError:
        return True


def error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["message"] and error["type"]
    return error["code"]


def refusals(cluster: Cluster, reason: str) -> float:
    status, body = http_get(cluster.base_url + "/metrics")
    assert status == 200
    return metric_value(body.decode(), "dynamo_frontend_http_refusals_total", {"reason": reason}) or 0.0


def trickle_until_answered(sock: socket.socket, piece: bytes, gap: float, most: int) -> None:
    for _ in range(most):
        if select.select([sock], [], [], 0)[0]:
            return
        try:
            sock.sendall(piece)
        except ConnectionError:
            return
        time.sleep(gap)


def test_partial_headers_get_408_and_close(cluster):
    before = refusals(cluster, "header_timeout")
    with connect(cluster) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        trickle_until_answered(sock, b"X-a: b\r\n", 0.2, 50)  # a line every 0.2 s does not extend the deadline
        status, headers, body = read_answer(sock)
        assert (status, headers["connection"], error_code(body)) == (408, "close", "request_timeout")
        assert closed(sock)
        assert time.monotonic() - started < 8.0  # the trickle would have gone on for 10 s
    assert refusals(cluster, "header_timeout") == before + 1


def test_a_trickled_chat_body_gets_408(cluster):
    before = refusals(cluster, "body_timeout")
    with connect(cluster) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{")
        trickle_until_answered(sock, b" ", 0.2, 50)  # gaps inside the deadline, a rate far below 500 B/s
        status, _, body = read_answer(sock)
        assert (status, error_code(body)) == (408, "request_timeout")
        assert closed(sock)
    assert refusals(cluster, "body_timeout") == before + 1
    with httpx.Client(base_url=cluster.base_url, timeout=GENEROUS) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_a_one_megabyte_header_gets_431_while_chat_is_served(cluster):
    answers: list[int] = []

    def chat() -> None:
        with httpx.Client(base_url=cluster.base_url, timeout=GENEROUS) as client:
            answers.extend(client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3))

    side = threading.Thread(target=chat)
    with connect(cluster) as sock:
        side.start()
        try:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except ConnectionError:
            pass  # the rest refused: the answer is still there to read
        status, _, body = read_answer(sock)
        assert (status, error_code(body)) == (431, "request_header_fields_too_large")
    side.join(GENEROUS)
    assert answers == [200, 200, 200]


def test_a_long_url_gets_414_and_a_head_within_the_limit_is_served(cluster):
    with connect(cluster) as sock:
        sock.sendall(b"GET /v1/models?" + b"a" * (256 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_answer(sock)
        assert (status, error_code(body)) == (414, "uri_too_long")
    with httpx.Client(base_url=cluster.base_url, timeout=GENEROUS) as client:
        resp = client.post("/v1/chat/completions", json=CHAT, headers={"cookie": "a" * (48 << 10)})
        assert resp.status_code == 200


def test_beyond_the_connection_limit_new_ones_get_503_and_open_ones_work(cluster):
    before = refusals(cluster, "connection_limit")
    held: list[socket.socket] = []
    try:
        for _ in range(CONNECTION_LIMIT + 1):  # served connections stay open (keep-alive) until one is refused
            sock = connect(cluster)
            sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_answer(sock)
            if status == 503:
                assert (headers["retry-after"], error_code(body)) == ("1", "too_many_connections")
                assert closed(sock)
                sock.close()
                break
            assert status == 200
            held.append(sock)
        else:
            pytest.fail(f"{CONNECTION_LIMIT + 1} connections open, none refused")
        assert len(held) <= CONNECTION_LIMIT
        for sock in held:
            sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock)[0] == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert refusals(cluster, "connection_limit") == before + 1
    status, body = http_get(cluster.base_url + "/metrics")
    assert metric_value(body.decode(), "dynamo_frontend_http_connection_limit") == CONNECTION_LIMIT

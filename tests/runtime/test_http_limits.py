"""The embedded HTTP server's connection limits (runtime/http_limits.py, http_protocol.py), on
real sockets against `EmbeddedHttpServer` serving a small ASGI app: slow heads and bodies get
408 and are closed, oversized heads 431/414 without stalling others, a connection beyond the
cap 503 while the open ones keep working; requests within every limit are served as before."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time

import pytest

from dynamo.runtime.asgi import EmbeddedHttpServer, read_body, send_json
from dynamo.runtime.config import parse_config
from dynamo.runtime.http_limits import HttpLimits, HttpLimitSettings

GENEROUS = 20.0  # bounds that only a hang breaks, even on a loaded 2-core box


class App:
    """Echoes the body's length; `/slow-reader` waits before reading it. Records how body reads end."""

    def __init__(self) -> None:
        self.read_errors: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["path"] == "/slow-reader":
            await asyncio.sleep(1.0)
        try:
            body = await read_body(receive, 64 << 20)
        except ConnectionError as exc:
            self.read_errors.append(str(exc))
            return
        await send_json(send, 200, {"bytes": len(body), "headers": len(scope["headers"])})


@pytest.fixture
async def serve():
    servers: list[EmbeddedHttpServer] = []

    async def start(**limits) -> tuple[EmbeddedHttpServer, App]:
        app = App()
        server = EmbeddedHttpServer(app, "127.0.0.1", 0, limits=HttpLimits(**limits))
        await server.start()
        servers.append(server)
        return server, app

    yield start
    for server in servers:
        await server.stop()


async def connect(server: EmbeddedHttpServer):
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response with a content-length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GENEROUS)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), GENEROUS)
    return int(lines[0].split()[1]), headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF or reset) within GENEROUS seconds."""
    try:
        return await asyncio.wait_for(reader.read(), GENEROUS) == b""
    except ConnectionError:
        return True


async def get(server: EmbeddedHttpServer, head: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", body: bytes = b""):
    reader, writer = await connect(server)
    writer.write(head + body)
    try:
        return await read_answer(reader)
    finally:
        writer.close()


async def send_until(answer: asyncio.Task, writer: asyncio.StreamWriter, pieces: list[bytes], gap: float) -> None:
    """Write `pieces` one per `gap` s until they run out or the answer has come."""
    for piece in pieces:
        if answer.done():
            return
        try:
            writer.write(piece)
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(gap)


def error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["message"] and error["type"]
    return error["code"]


# -- request heads ---------------------------------------------------------------------------------
async def test_partial_headers_get_408_and_close_at_the_header_deadline(serve):
    server, _ = await serve(header_timeout=0.5)
    reader, writer = await connect(server)
    started = time.monotonic()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    answer = asyncio.create_task(read_answer(reader))
    await send_until(answer, writer, [b"X-a%d: b\r\n" % i for i in range(40)], 0.1)  # does not extend it
    status, headers, body = await answer
    assert (status, headers["connection"], error_code(body)) == (408, "close", "request_timeout")
    assert await closed(reader)
    assert time.monotonic() - started < 3.5  # the trickle would have gone on for 4 s
    assert server.guard.refused["header_timeout"] == 1
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(serve):
    server, _ = await serve(header_timeout=0.3)
    reader, writer = await connect(server)
    assert await reader.read() == b""
    writer.close()


async def test_a_one_megabyte_header_gets_431_at_once_and_others_stay_fast(serve):
    server, _ = await serve()
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    small = asyncio.create_task(get(server))
    status, headers, body = await read_answer(reader)
    assert (status, headers["connection"], error_code(body)) == (431, "close", "request_header_fields_too_large")
    assert await closed(reader)
    assert (await asyncio.wait_for(small, GENEROUS))[0] == 200
    assert server.guard.refused["head_too_large"] == 1
    writer.close()


async def test_a_head_within_the_limit_is_served(serve):
    server, _ = await serve(head_bytes=64 << 10)
    status, _, body = await get(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (60 << 10) + b"\r\n\r\n")
    assert status == 200 and json.loads(body)["headers"] == 2


async def test_a_long_url_gets_414(serve):
    server, _ = await serve()
    status, _, body = await get(server, b"GET /?" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, error_code(body)) == (414, "uri_too_long")
    assert server.guard.refused["url_too_long"] == 1


async def test_too_many_header_fields_get_431_and_no_invalid_request_warning(serve, caplog):
    server, _ = await serve(header_count=10)

    def head(count: int) -> bytes:
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(count)) + b"\r\n"

    assert (await get(server, head(10)))[0] == 200
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        status, _, body = await get(server, head(11))
    assert (status, error_code(body)) == (431, "too_many_headers")
    assert server.guard.refused["too_many_headers"] == 1
    assert not [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]


async def test_an_oversized_head_logs_no_invalid_request_warning(serve, caplog):
    server, _ = await serve()
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        status, _, _ = await get(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    assert status == 431
    assert not [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]


async def test_an_invalid_request_gets_uvicorns_400_and_warning(serve, caplog):
    server, _ = await serve()
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        status, _, body = await get(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert (status, body) == (400, b"Invalid HTTP request received.")
    assert [r for r in caplog.records if r.getMessage() == "Invalid HTTP request received."]
    assert sum(server.guard.refused.values()) == 0  # not one of ours
    assert (await get(server))[0] == 200  # and the server carries on


# -- request bodies --------------------------------------------------------------------------------
def post_head(length: int) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length


async def trickle(server: EmbeddedHttpServer, length: int, gap: float, chunks: int):
    """Headers, then one body byte per `gap` s: (status, body) of the answer, seconds it took."""
    reader, writer = await connect(server)
    writer.write(post_head(length))
    started = time.monotonic()
    answer = asyncio.create_task(read_answer(reader))
    await send_until(answer, writer, [b" "] * chunks, gap)
    status, _, body = await answer
    assert await closed(reader)
    writer.close()
    return status, body, time.monotonic() - started


async def test_a_stalled_body_gets_408_and_the_app_sees_the_client_gone(serve):
    server, app = await serve(body_timeout=0.5)
    reader, writer = await connect(server)
    writer.write(post_head(100) + b"{")
    status, headers, body = await read_answer(reader)
    assert (status, headers["connection"], error_code(body)) == (408, "close", "request_timeout")
    assert await closed(reader)
    assert app.read_errors == ["client disconnected"]
    assert server.guard.refused["body_timeout"] == 1
    writer.close()


async def test_a_trickled_body_gets_408_once_below_the_minimum_rate(serve):
    # gaps (0.1 s) well inside the gap deadline: only the rate floor (100 B/s after 0.5 s) ends it
    server, _ = await serve(body_timeout=0.5, body_min_rate=100)
    status, body, took = await trickle(server, 1000, 0.1, 50)
    assert (status, error_code(body)) == (408, "request_timeout")
    assert took < 4.0  # the trickle would have gone on for 5 s


async def test_a_slow_body_within_the_deadlines_is_served(serve):
    server, _ = await serve(body_timeout=2.0, body_min_rate=0)
    status, body, _ = await trickle(server, 5, 0.2, 5)
    assert (status, json.loads(body)) == (200, {"bytes": 5, "headers": 2})


async def test_time_the_app_spends_not_reading_is_not_the_clients(serve):
    # 1 MiB: uvicorn stops reading once 64 KiB wait unread; the app reads only after 1 s
    server, _ = await serve(body_timeout=0.3)
    status, _, body = await get(server, post_head(1 << 20).replace(b"/ ", b"/slow-reader "), b"a" * (1 << 20))
    assert (status, json.loads(body)["bytes"]) == (200, 1 << 20)


# -- connections -----------------------------------------------------------------------------------
async def test_beyond_the_connection_cap_new_ones_get_503_and_open_ones_keep_working(serve):
    server, _ = await serve(connections=3)
    held = [await connect(server) for _ in range(3)]
    for reader, writer in held:  # each served once, then idle on keep-alive
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
    status, headers, body = await get(server)
    assert (status, headers["retry-after"], error_code(body)) == (503, "1", "too_many_connections")
    assert server.guard.refused["connection_limit"] == 1
    for reader, writer in held:  # untouched: still served
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
    held[0][1].close()
    await closed(held[0][0])
    await wait_for(lambda: len(server.guard.connections) == 2)
    assert (await get(server))[0] == 200  # room again
    for _, writer in held[1:]:
        writer.close()


async def test_keep_alive_and_pipelined_requests_are_served(serve):
    server, _ = await serve(header_timeout=0.5)
    reader, writer = await connect(server)
    writer.write((post_head(3) + b"abc") * 2 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = [await read_answer(reader) for _ in range(3)]
    assert [(a[0], json.loads(a[2])["bytes"]) for a in answers] == [(200, 3), (200, 3), (200, 0)]
    await asyncio.sleep(0.8)  # idle past the header deadline between requests: keep-alive's business
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_a_hand_off_and_its_sweep_outlive_a_foreign_or_failing_connection(serve, caplog):
    """A connection object that is not our guarded protocol (a WebSocket one, were uvicorn given one) is skipped,
    and an error from one connection is logged: the other connections are still retired and closed."""
    server, _ = await serve()
    assert server.server.config.ws == "none"  # uvicorn adds no WebSocket protocol objects of its own
    connections = server.server.server_state.connections
    failing_reader, failing_writer = await connect(server)
    failing_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(failing_reader))[0] == 200
    (failing,) = connections

    def boom(*_):
        raise RuntimeError("boom")

    failing.close_if_idle = boom
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    foreign = object()
    connections.add(foreign)
    try:
        with caplog.at_level(logging.ERROR, logger="dynamo.runtime.asgi"):
            server.stop_listening()
            server.retire_connections()  # no AttributeError out of the hand-off
            assert await closed(reader)  # the sweep went on past the foreign and the failing connection
        assert "close_if_idle failed" in caplog.text
        assert server._sweeper is not None and not server._sweeper.done()
    finally:
        connections.discard(foreign)
        del failing.close_if_idle
        writer.close()
        failing_writer.close()


async def test_requests_pipelined_after_a_hand_off_are_all_answered_the_last_with_close(serve):
    """Two GETs in one write to a retiring connection: both are answered, and only the last says
    `Connection: close` (closing after the first would drop the second, which the client already sent)."""
    server, _ = await serve()
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader))[0] == 200  # the connection exists, idle
    server.stop_listening()
    server.retire_connections()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    first, second = await read_answer(reader), await read_answer(reader)
    assert (first[0], second[0]) == (200, 200)
    assert first[1].get("connection") != "close" and second[1].get("connection") == "close"
    assert await closed(reader)
    writer.close()


async def wait_for(predicate, timeout: float = GENEROUS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- settings --------------------------------------------------------------------------------------
def test_flags_and_env_twins_make_the_limits():
    config = parse_config(HttpLimitSettings, ["--http-header-limit-kb", "8", "--http-connection-limit", "50"],
                          environ={"DYN_HTTP_BODY_TIMEOUT_SECS": "5", "DYN_HTTP_BODY_MIN_BYTES_PER_SEC": "0"})
    assert config.http_limits() == HttpLimits(header_timeout=30.0, body_timeout=5.0, body_min_rate=0.0,
                                              head_bytes=8192, header_count=100, connections=50)


@pytest.mark.parametrize("argv", [["--http-header-timeout-secs", "0"], ["--http-body-timeout-secs", "-1"],
                                  ["--http-header-limit-kb", "0"], ["--http-header-count-limit", "0"],
                                  ["--http-connection-limit", "0"], ["--http-body-min-bytes-per-sec", "-1"]])
def test_a_limit_that_would_refuse_every_request_is_refused(argv):
    with pytest.raises(ValueError, match=argv[0]):
        parse_config(HttpLimitSettings, argv, environ={}).check_http_limits()


def test_the_default_connection_cap_leaves_half_the_descriptors():
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        assert HttpLimits().connection_cap() == soft // 2
    assert HttpLimits(connections=7).connection_cap() == 7

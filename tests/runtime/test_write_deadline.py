"""The HTTP write deadline (runtime/write_deadline.py, hooked in by http_protocol.py), on real sockets
against `EmbeddedHttpServer`, on asyncio's loop and on uvloop (the frontend's), plain and TLS: a client
that stops reading and never hangs up has its connection dropped once it has taken nothing for the
deadline, the app's `send` released as for a client that hung up, while others are served; a client
that reads slowly but steadily is never cut (without TCP_INFO too); an answer that ends with bytes nobody
takes does not hold its connection; 0 turns the deadline off (no watch starts). Plus the stall clock's
logic and the settings."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Awaitable, Callable

import pytest
import uvloop

from dynamo.runtime.asgi import EmbeddedHttpServer
from dynamo.runtime.config import parse_config
from dynamo.runtime.http_limits import HttpLimits, HttpLimitSettings
from dynamo.runtime import write_deadline
from dynamo.runtime.write_deadline import StallClock, bytes_acked
from tests.fixtures.pki import make_pki

GENEROUS = 30.0  # bounds that only a hang breaks, even on a loaded 2-core box
CHUNK = b"x" * (64 << 10)
BIG = 16 << 20  # far more than the kernel's buffers on both sides and the transport's high-water mark
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class App:
    """`/stream?N` streams N bytes in 64 KiB chunks, `/unary?N` answers N bytes in one piece, `/` a few
    bytes; `ended` says how each stream ended: "complete", or "disconnected" (its client was gone)."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        size = int(scope["query_string"] or 0)
        if scope["path"] == "/stream":
            await self.stream(size, receive, send)
            return
        body = CHUNK[:1] * size if scope["path"] == "/unary" else b"ok"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def stream(self, size: int, receive, send) -> None:
        assert (await receive())["type"] == "http.request"  # its (empty) body: what comes next is a disconnect
        gone = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        while sent < size and not gone.done():
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
            sent += len(CHUNK)
        if gone.done():
            self.ended.append("disconnected")
            return
        gone.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.ended.append("complete")


def run(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(scenario(), GENEROUS * 2))


async def serving(limits: HttpLimits, tls: dict | None = None) -> tuple[EmbeddedHttpServer, App]:
    app = App()
    server = EmbeddedHttpServer(app, "127.0.0.1", 0, limits=limits, **(tls or {}))
    await server.start()
    return server, app


def connected(server: EmbeddedHttpServer, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A blocking client with a 4 KiB receive window, connected."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(GENEROUS)
    sock.connect(("127.0.0.1", server.port))
    return tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls is not None else sock


def ask(sock: socket.socket, target: bytes) -> socket.socket:
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
    return sock


def client(server: EmbeddedHttpServer, target: bytes, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A client that has sent its request and read nothing yet."""
    return ask(connected(server, tls), target)


def read_to_the_end(sock: socket.socket) -> tuple[int, bool]:
    """(bytes read, whether the response was complete) once the server closes (EOF or reset)."""
    data, tail = 0, b""
    try:
        while chunk := sock.recv(1 << 20):
            data, tail = data + len(chunk), (tail + chunk)[-16:]
    except (ConnectionError, ssl.SSLError):
        pass
    return data, tail.endswith(b"0\r\n\r\n")


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def wait_for(predicate, timeout: float = GENEROUS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def get_small(server: EmbeddedHttpServer, tls: ssl.SSLContext | None) -> bytes:
    """The whole answer to `GET /`, read as it comes."""
    with client(server, b"/", tls) as sock:
        answer = b""
        while not answer.endswith(b"ok"):
            chunk = sock.recv(4096)
            assert chunk
            answer += chunk
        return answer


# -- a client that stops reading -------------------------------------------------------------------
async def stalled_stream(tls: tuple[dict, ssl.SSLContext] | None = None) -> None:
    server, app = await serving(HttpLimits(write_timeout=0.5), tls and tls[0])
    try:
        sock = await in_thread(client, server, b"/stream?%d" % BIG, tls and tls[1])
        answer = await in_thread(get_small, server, tls and tls[1])  # served meanwhile
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        await wait_for(lambda: app.ended == ["disconnected"])  # the app's send was released
        assert server.guard.refused["write_timeout"] == 1
        read, complete = await in_thread(read_to_the_end, sock)  # reading at last: the server has hung up
        assert not complete and read < BIG
        sock.close()
        await wait_for(lambda: not server.guard.connections)
    finally:
        await server.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_stops_reading_is_dropped_and_its_send_released(loop):
    run(loop, stalled_stream)


def test_without_tcp_info_what_leaves_the_buffer_is_the_progress(monkeypatch):
    monkeypatch.setattr(write_deadline, "_TCP_INFO", None)  # as off Linux
    run("uvloop", stalled_stream)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[dict, ssl.SSLContext]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    return {"ssl_certfile": pki["cert"], "ssl_keyfile": pki["key"]}, ssl.create_default_context(cafile=pki["ca"])


@pytest.mark.parametrize("loop", LOOPS)
def test_over_tls_too(loop, tls):
    run(loop, lambda: stalled_stream(tls))


async def unread_answer() -> None:
    server, _ = await serving(HttpLimits(write_timeout=0.5))
    try:
        sock = await in_thread(client, server, b"/unary?%d" % BIG)  # all of it written at once: the app is done
        await wait_for(lambda: server.guard.refused["write_timeout"] == 1)
        read, _ = await in_thread(read_to_the_end, sock)
        assert read < BIG
        sock.close()
        await wait_for(lambda: not server.guard.connections)
    finally:
        await server.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_nobody_reads_does_not_hold_its_connection(loop):
    run(loop, unread_answer)


# -- clients that read -----------------------------------------------------------------------------
# The slow reader's deadline: its reads are a thread of this process, behind the server's loop for the GIL,
# so a loaded 2-core box can pause them for a second or more; this is several such pauses long.
SLOW_READER_DEADLINE = 3.0


def read_slowly_then_all(sock: socket.socket, seconds: float) -> tuple[int, bool]:
    """4 KiB every 0.1 s for `seconds`, then the rest of the stream at once."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert sock.recv(4096)
        time.sleep(0.1)
    return read_to_the_end_of_a_stream(sock)


async def slow_reader(small_send_buffer: bool = False) -> None:
    """`small_send_buffer`: the server sends from a small kernel buffer, writable again as soon as a little of it
    drained, as BSD's and macOS's are (their low-water mark); Linux's, autotuned to MiBs, is writable only once
    a third of it drained, which at this pace takes longer than the deadline: off Linux, without TCP_INFO,
    what left the transport's buffer is the progress, and it comes at the reader's pace there."""
    server, app = await serving(HttpLimits(write_timeout=SLOW_READER_DEADLINE))
    try:
        sock = await in_thread(connected, server)
        if small_send_buffer:
            await wait_for(lambda: server.guard.connections)
            (conn,) = server.guard.connections
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        await in_thread(ask, sock, b"/stream?%d" % (4 << 20))
        # past the latest a client that took nothing would be cut (1.25 deadlines), by a second and more
        read, complete = await in_thread(read_slowly_then_all, sock, 5.0)
        sock.close()
        assert complete and app.ended == ["complete"]
        assert server.guard.refused["write_timeout"] == 0
    finally:
        await server.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_reads_slowly_but_steadily_is_not_cut(loop):
    run(loop, slow_reader)


def test_without_tcp_info_a_client_that_reads_slowly_is_not_cut_either(monkeypatch):
    monkeypatch.setattr(write_deadline, "_TCP_INFO", None)  # as off Linux, and a send buffer as there
    run("uvloop", lambda: slow_reader(small_send_buffer=True))


async def no_deadline() -> None:
    server, app = await serving(HttpLimits(write_timeout=0))
    try:
        sock = await in_thread(client, server, b"/stream?%d" % (4 << 20))
        # Stalled: its transport paused, where a deadline (any other value) starts its watch; 0 starts none.
        await wait_for(lambda: any(c._write_paused() for c in server.guard.connections))
        assert [c._writes for c in server.guard.connections] == [None]
        read, complete = await in_thread(read_to_the_end_of_a_stream, sock)
        sock.close()
        assert complete and app.ended == ["complete"]
    finally:
        await server.stop()


def read_to_the_end_of_a_stream(sock: socket.socket) -> tuple[int, bool]:
    """(bytes read, True) once the chunked stream's last chunk came (the connection stays open)."""
    data, tail = 0, b""
    while not tail.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(1 << 20)
        assert chunk
        data, tail = data + len(chunk), (tail + chunk)[-16:]
    return data, True


def test_zero_turns_the_deadline_off():
    run("uvloop", no_deadline)


# -- logic and settings ----------------------------------------------------------------------------
def test_the_stall_clock_counts_from_the_last_progress():
    clock = StallClock(10.0, now=0.0, taken=100)
    assert not clock.stalled(9.0, 100)
    assert not clock.stalled(9.5, 101)  # any progress restarts it
    assert not clock.stalled(19.0, 101)
    assert clock.stalled(19.5, 101)
    assert not clock.stalled(20.0, 5000)


def test_bytes_acked_counts_what_the_peer_took_on_tcp_only():
    listener = socket.create_server(("127.0.0.1", 0))
    conn = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    a, b = socket.socketpair()
    try:
        assert bytes_acked(a) is None and bytes_acked(None) is None
        before = bytes_acked(conn)
        if before is None:
            pytest.skip("no TCP_INFO bytes_acked here (not Linux): the write buffer's size stands in")
        conn.sendall(b"x" * 1000)
        assert peer.recv(1000)
        deadline = time.monotonic() + GENEROUS
        while bytes_acked(conn) - before < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bytes_acked(conn) - before == 1000
    finally:
        for sock in (conn, peer, listener, a, b):
            sock.close()


def test_the_flag_and_its_env_twin_set_the_deadline():
    assert HttpLimits().write_timeout == 60.0
    assert parse_config(HttpLimitSettings, ["--http-write-timeout-secs", "5"], environ={}).http_limits() \
        .write_timeout == 5.0
    config = parse_config(HttpLimitSettings, [], environ={"DYN_HTTP_WRITE_TIMEOUT_SECS": "0"})
    config.check_http_limits()  # 0: off
    assert config.http_limits().write_timeout == 0.0
    with pytest.raises(ValueError, match="--http-write-timeout-secs"):
        parse_config(HttpLimitSettings, ["--http-write-timeout-secs", "-1"], environ={}).check_http_limits()

"""A draining request-plane server (after `stop_accepting`): requests already running
finish, and a request arriving on a connection that is still open is refused with the
`draining` code before its handler runs (real server and client on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.runtime.rp_client import CannotConnect, Disconnected, RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import RequestPlaneServer
from dynamo.runtime.wire import ErrorCode


@pytest.fixture
async def plane():
    server = RequestPlaneServer("127.0.0.1", 0)
    started: list = []
    release = asyncio.Event()

    async def handler(request, ctx):
        started.append(request)
        await release.wait()
        yield b"done"

    server.add_handler("generate", handler)
    await server.start()
    client = RequestPlaneClient()
    yield server, client, started, release
    await client.close()
    await server.close()


async def test_running_request_finishes_and_a_new_one_is_refused_as_draining(plane):
    server, client, started, release = plane
    running = await client.open_stream(server.address, "generate", b"first")
    for _ in range(200):
        if started:
            break
        await asyncio.sleep(0.01)
    assert started == [b"first"]
    await server.stop_accepting()
    late = await client.open_stream(server.address, "generate", b"late")  # same pooled connection
    with pytest.raises(StreamError) as err:
        [item async for item in late]
    assert err.value.code == ErrorCode.DRAINING == "draining"
    assert started == [b"first"]  # the refused request never reached the handler
    release.set()
    assert [item async for item in running] == [b"done"]
    assert await server.drain(5)


async def _started(started: list, n: int) -> None:
    for _ in range(500):
        if len(started) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"handlers started: {started}")


async def test_after_goaway_new_requests_go_to_a_new_connection_which_is_refused(plane):
    server, client, started, release = plane
    running = await client.open_stream(server.address, "generate", b"first")
    await _started(started, 1)
    await server.stop_accepting()  # listener closed, GoAway sent
    for _ in range(200):
        conn = client._conns.get(server.address)
        if conn is not None and conn.going_away:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(CannotConnect):  # the draining worker's connection takes no new stream
        await client.open_stream(server.address, "generate", b"late")
    release.set()
    assert [item async for item in running] == [b"done"]
    for _ in range(200):  # idle after GoAway: the caller closes it, the worker need not reset it
        if not server.connections:
            break
        await asyncio.sleep(0.01)
    assert not server.connections


async def test_close_cuts_running_streams_as_disconnects_the_caller_can_migrate(plane):
    server, client, started, release = plane
    running = await client.open_stream(server.address, "generate", b"first")
    await _started(started, 1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await server.close(linger=60)
    # the caller closed its connection once its cut stream ended: close() did not sit out the linger
    assert loop.time() - began < 30
    with pytest.raises(Disconnected):
        [item async for item in running]

"""`ResponseStream.next_batch(timeout)`: a deadline on the caller's wait for a worker's next
item, raising the typed `StreamTimeout` (code "timeout") and leaving the stream open for the
caller to wait again or cancel (real server and client on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.runtime.rp_client import RequestPlaneClient, StreamError, StreamTimeout
from dynamo.runtime.rp_server import RequestPlaneServer

GENEROUS = 30.0  # deadlines that must not fire, even on a loaded 2-core box


@pytest.fixture
async def plane():
    """A worker whose `held` endpoint sends nothing until the test releases it, then one item."""
    server = RequestPlaneServer("127.0.0.1", 0)
    release = asyncio.Event()
    cancelled = asyncio.Event()

    async def held(payload, ctx):
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield b"late"

    async def quick(payload, ctx):
        yield b"one"
        yield b"two"

    server.add_handler("held", held)
    server.add_handler("quick", quick)
    await server.start()
    client = RequestPlaneClient()
    yield server, client, release, cancelled
    await client.close()
    await server.close()


async def test_nothing_in_time_is_a_typed_timeout_and_the_stream_stays_open(plane):
    server, client, release, cancelled = plane
    stream = await client.open_stream(server.address, "held", b"")
    with pytest.raises(StreamTimeout) as err:
        await stream.next_batch(timeout=0.2)
    assert isinstance(err.value, StreamError) and err.value.code == "timeout"
    assert not stream.done and not cancelled.is_set()  # the caller decides what a timeout means
    release.set()
    assert await stream.next_batch(timeout=GENEROUS) == [b"late"]
    assert await stream.next_batch(timeout=GENEROUS) == []


async def test_a_timeout_then_cancel_stops_the_worker(plane):
    server, client, release, cancelled = plane
    stream = await client.open_stream(server.address, "held", b"")
    with pytest.raises(StreamTimeout):
        await stream.next_batch(timeout=0.1)
    stream.cancel()
    await asyncio.wait_for(cancelled.wait(), GENEROUS)


async def test_items_within_the_deadline_are_returned(plane):
    server, client, _, _ = plane
    stream = await client.open_stream(server.address, "quick", b"")
    items = []
    while batch := await stream.next_batch(timeout=GENEROUS):
        items += batch
    assert items == [b"one", b"two"]


async def test_zero_timeout_still_hands_over_what_already_arrived(plane):
    server, client, _, _ = plane
    stream = await client.open_stream(server.address, "quick", b"")
    assert await stream.__anext__() == b"one"  # takes one item, leaves the rest queued
    while not stream.done:  # the end marker: everything was received
        await asyncio.sleep(0.01)
    assert await stream.next_batch(timeout=0) == [b"two"]
    assert await stream.next_batch(timeout=0) == []


async def test_iteration_shares_the_wait_and_ends_normally(plane):
    server, client, _, _ = plane
    stream = await client.open_stream(server.address, "quick", b"")
    assert [item async for item in stream] == [b"one", b"two"]

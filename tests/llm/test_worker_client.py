"""The worker client (`dynamo.llm.worker_client`) against real request-plane workers on
loopback: outputs arrive decoded in batches; stopping early, being cancelled, or missing a
deadline cancels the worker's stream (its handler sees CancelledError); failures propagate
typed. Deadlines that must not fire are generous; the ones that must fire are short, and only
the outcome is asserted, never how long it took."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.llm.protocol import PreprocessedRequest, request_encoder
from dynamo.llm.worker_client import Deadlines, WorkerClient
from dynamo.runtime.net import free_port
from dynamo.runtime.rp_client import CannotConnect, Disconnected, RequestPlaneClient, StreamTimeout
from tests.fixtures.scripted_worker import ScriptedWorker

NO_DEADLINES = Deadlines()

GENEROUS = 30.0
REQUEST = PreprocessedRequest(request_id="r1", model="m", token_ids=[1, 2, 3])


@pytest.fixture
async def start():
    servers, clients = [], []

    async def start(deadlines: Deadlines = NO_DEADLINES, **worker) -> tuple[ScriptedWorker, WorkerClient]:
        w = ScriptedWorker(**worker)
        await w.server.start()
        servers.append(w.server)
        clients.append(RequestPlaneClient())
        return w, WorkerClient(clients[-1], deadlines)

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close(linger=0.1)


async def test_outputs_arrive_decoded_and_the_first_is_reported_once(start):
    worker, wc = await start(count=3, gap=0.01)
    firsts = []
    async with await wc.open(worker.address, "generate", REQUEST, lambda: firsts.append(1)) as call:
        outputs = [out async for batch in call for out in batch]
    assert [out.token_ids for out in outputs] == [[100], [101], [102]]
    assert outputs[-1].finish_reason == "length" and firsts == [1]
    assert worker.requests == [REQUEST] and not worker.cancelled.is_set()


async def test_an_encoded_request_is_sent_as_is(start):
    worker, wc = await start(count=1)
    async with await wc.open(worker.address, "generate", request_encoder.encode(REQUEST)) as call:
        assert [b async for b in call]
    assert worker.requests == [REQUEST]


async def test_stopping_early_cancels_the_worker(start):
    worker, wc = await start(count=1000, gap=0.01)
    async with await wc.open(worker.address, "generate", REQUEST) as call:
        async for _ in call:
            break
    await asyncio.wait_for(worker.cancelled.wait(), GENEROUS)


async def test_a_cancelled_consumer_cancels_the_worker(start):
    worker, wc = await start(count=0, hang=True)

    async def consume() -> None:
        async with await wc.open(worker.address, "generate", REQUEST) as call:
            async for _ in call:
                pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(worker.started.wait(), GENEROUS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(worker.cancelled.wait(), GENEROUS)


async def test_first_output_deadline_fires_and_cancels_the_worker(start):
    worker, wc = await start(Deadlines(first_output=0.3), count=0, hang=True)
    call = await wc.open(worker.address, "generate", REQUEST)
    with pytest.raises(StreamTimeout) as err:
        await call.__anext__()
    assert err.value.code == "timeout" and "first-output" in str(err.value)
    await asyncio.wait_for(worker.cancelled.wait(), GENEROUS)


async def test_idle_deadline_fires_between_outputs_and_cancels_the_worker(start):
    worker, wc = await start(Deadlines(idle=0.3), count=1, hang=True)
    call = await wc.open(worker.address, "generate", REQUEST)
    seen = []
    with pytest.raises(StreamTimeout) as err:
        async for batch in call:
            seen += batch
    assert [out.token_ids for out in seen] == [[100]] and "idle" in str(err.value)
    await asyncio.wait_for(worker.cancelled.wait(), GENEROUS)


async def test_idle_deadline_does_not_cut_a_slow_first_output(start):
    # The first output comes after a full second (a sleep is a lower bound, even on a loaded
    # box); an idle deadline of 0.2 s would have fired long before if it applied to it.
    worker, wc = await start(Deadlines(first_output=GENEROUS, idle=0.2), count=2, first_delay=1.0)
    async with await wc.open(worker.address, "generate", REQUEST) as call:
        outputs = [out async for batch in call for out in batch]
    assert len(outputs) == 2 and not worker.cancelled.is_set()


async def test_a_worker_shut_down_mid_stream_is_disconnected(start):
    worker, wc = await start(count=1, hang=True)
    call = await wc.open(worker.address, "generate", REQUEST)
    assert await call.__anext__()
    await worker.server.close(linger=0.1)  # cuts what still runs
    with pytest.raises(Disconnected):
        await call.__anext__()


async def test_an_unreachable_worker_cannot_connect(start):
    _, wc = await start()
    with pytest.raises(CannotConnect):
        await wc.open(f"127.0.0.1:{free_port()}", "generate", REQUEST)

"""A SIGTERMed worker's drain (`DistributedRuntime.drain`), as NVIDIA Dynamo's: out of discovery at once, still
serving requests through the grace period (callers that routed one before they saw it leave are served, not
refused), then refusing new ones; an idle worker ends the grace period early (real server and client)."""

from __future__ import annotations

import asyncio
import time

from dynamo.runtime import distributed
from dynamo.runtime.discovery.mem import MemStore
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.rp_client import CannotConnect, StreamError
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.wire import ErrorCode


async def _runtime(grace: float) -> DistributedRuntime:
    store = MemStore(name="drain-grace")
    await store.start()
    runtime = DistributedRuntime(store, settings=RuntimeSettings(graceful_shutdown_grace_period_secs=grace))

    async def handler(request, ctx):
        yield b"ok"

    await runtime.serve_endpoint(runtime.endpoint_id("dynamo.worker.generate"), handler)
    return runtime


async def _ask(runtime: DistributedRuntime) -> list:
    stream = await runtime.client.open_stream(runtime.server.advertised, "generate", b"x")
    return [item async for item in stream]


async def test_requests_sent_after_the_unregister_are_served_through_the_grace_period(monkeypatch):
    monkeypatch.setattr(distributed, "GRACE_QUIET_SECS", 0.5)
    runtime = await _runtime(grace=5.0)
    try:
        drain = asyncio.create_task(runtime.drain(10.0))
        for _ in range(100):  # a caller that has not seen it leave keeps sending
            if not await runtime.store.get_prefix("v1/instances/"):
                break
            await asyncio.sleep(0.01)
        assert not await runtime.store.get_prefix("v1/instances/")
        for _ in range(5):
            assert await _ask(runtime) == [b"ok"]
            await asyncio.sleep(0.2)
        assert not drain.done()
        began = time.monotonic()
        assert await drain  # quiet for GRACE_QUIET_SECS: the grace period ends early
        assert time.monotonic() - began < 1.5
        try:
            await _ask(runtime)
        except CannotConnect:
            pass  # no longer listening
        except StreamError as exc:
            assert exc.code == ErrorCode.DRAINING
        else:
            raise AssertionError("a request after the grace period was served")
    finally:
        await runtime.shutdown()
        await runtime.store.close()

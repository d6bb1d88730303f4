"""The frontend's KServe gRPC stop at the end of a drain: a graceful stop that outlives its bound is followed by
an immediate one, so no call is left open (asyncio.wait_for cancels the graceful stop, which ends nothing)."""

from __future__ import annotations

import asyncio

from dynamo.frontend.__main__ import _stop_grpc


class _Server:
    """grpc.aio.Server's stop as the drain sees it: a graceful stop that waits on a call that never ends."""

    def __init__(self) -> None:
        self.stops: list[float | None] = []
        self.calls_open = True

    async def stop(self, grace: float | None) -> None:
        self.stops.append(grace)
        if grace:
            await asyncio.sleep(3600)  # the open call outlives any grace
        self.calls_open = False


async def test_a_graceful_stop_past_its_bound_ends_the_calls_at_once():
    server = _Server()
    graceful = asyncio.create_task(server.stop(30.0))
    await asyncio.wait_for(_stop_grpc(server, graceful), 10)
    assert server.stops == [30.0, 0] and not server.calls_open

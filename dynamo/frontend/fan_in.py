"""The `n` choices of one request, each its own worker stream, read as one stream of (choice index,
batch) in arrival order. Its one consumer (the generation run) owns the response, so a choice's stream
that fails raises there, and the other choices' streams are stopped when it stops reading.

The queue between them is bounded: a consumer that waits (on a client that does not read) stops the
pumps too, so what the workers send meanwhile waits undecoded in their streams, where the request's
backlog bound (`dynamo.runtime.rp_backlog`) sees it, instead of piling up here decoded."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator


async def merged(gens: list) -> AsyncIterator[tuple[int, object]]:
    """(choice index, batch) from every choice's worker stream, in arrival order."""
    if len(gens) == 1:
        async for batch in gens[0]:
            yield 0, batch
        return
    queue: asyncio.Queue = asyncio.Queue(maxsize=len(gens))  # a batch per choice in flight

    async def pump(i: int, gen) -> None:
        try:
            async for batch in gen:
                await queue.put((i, batch, None))
        except Exception as exc:  # surfaces in the consumer, which owns the response
            await queue.put((i, None, exc))
            return
        await queue.put((i, None, None))

    tasks = [asyncio.create_task(pump(i, g), name=f"choice-{i}") for i, g in enumerate(gens)]
    try:
        remaining = len(tasks)
        while remaining:
            i, batch, exc = await queue.get()
            if exc is not None:
                raise exc
            if batch is None:
                remaining -= 1
                continue
            yield i, batch
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The `n` choices of one request, each its own worker stream, read as one stream of (choice index,
batch) in arrival order. Its one consumer (the generation run) owns the response, so a choice's stream
that fails raises there, and the other choices' streams are stopped when it stops reading."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator


async def merged(gens: list) -> AsyncIterator[tuple[int, object]]:
    """(choice index, batch) from every choice's worker stream, in arrival order."""
    if len(gens) == 1:
        async for batch in gens[0]:
            yield 0, batch
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, gen) -> None:
        try:
            async for batch in gen:
                queue.put_nowait((i, batch, None))
        except Exception as exc:  # surfaces in the consumer, which owns the response
            queue.put_nowait((i, None, exc))
            return
        queue.put_nowait((i, None, None))

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

"""`ModelManager.caught_up`: a frontend about to share its socket with others (a rollout's new replica under
`run`) waits until the model cards and instances discovery already holds are taken in, so that its first
request is served as the others serve it; with nothing registered it does not wait."""

from __future__ import annotations

import time

from dynamo.frontend.model_manager import ModelManager
from dynamo.runtime.discovery import mem
from dynamo.runtime.discovery.mem import MemStore
from tests.frontend.test_model_manager import Discovery


async def test_a_new_manager_catches_up_with_what_discovery_holds():
    store = MemStore(name="catch-up")
    await store.start()
    first = ModelManager(store, "dynamo")
    await first.start()
    try:
        began = time.monotonic()
        assert await first.caught_up(timeout=5)  # nothing registered: nothing to wait for
        assert time.monotonic() - began < 1
        workers = Discovery(store, first)
        await workers.card(1)
        await workers.instance(1)
        await workers.settle(lambda: first.has_workers("tiny"), "the worker at the first manager")
        second = ModelManager(store, "dynamo")  # a replica starting beside the first
        await second.start()
        try:
            assert await second.caught_up(timeout=30)
            assert second.has_workers("tiny"), "caught up before the model could be served"
        finally:
            await second.stop()
    finally:
        await first.stop()
        await store.close()
        mem.reset("catch-up")

"""The global router and a pool whose router answers `lora_not_loaded` (no worker of the pool holds the request's
LoRA adapter any more): that is the answer, passed on as it came (the frontend's 404), not a failed pool counted
in `dynamo_global_router_retries_total` and handed to the next pool."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from dynamo.global_router.handler import GlobalRouter
from dynamo.runtime.rp_client import StreamError
from dynamo.runtime.rp_server import HandlerError
from dynamo.runtime.wire import ErrorCode


def test_lora_not_loaded_is_the_answer_not_a_pool_failure():
    registry = CollectorRegistry()
    plan = SimpleNamespace(retry=True, pools={})
    router = GlobalRouter(plan, None, None, registry)  # type: ignore[arg-type]
    pools = SimpleNamespace(namespaces=["fast", "slow"], retry_order=lambda pool, retry: [1, 0])
    router.choose = lambda role, payload: (pools, 1, payload)  # type: ignore[method-assign]
    tried = []

    async def open_(ns, payload):
        tried.append(ns)
        raise StreamError("LoRA adapter 'ada' is not loaded", ErrorCode.LORA_NOT_LOADED)

    router._open = open_  # type: ignore[method-assign]

    async def run() -> None:
        async for _ in router.handle("agg", b"", None):  # type: ignore[arg-type]
            pass

    with pytest.raises(HandlerError) as answer:
        asyncio.run(run())
    assert answer.value.code == ErrorCode.LORA_NOT_LOADED and tried == ["slow"]
    assert registry.get_sample_value("dynamo_global_router_retries_total",
                                     {"type": "agg", "pool_namespace": "slow"}) is None

"""The router service's choice of worker when one answers `lora_not_loaded` (it dropped the request's LoRA
adapter before the caller saw its card go): that worker is skipped, not inhibited, and another tried, as for a
draining one; with no worker left the caller gets `lora_not_loaded` (its 404), never a 500 or a 503."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.inhibit import Inhibitor
from dynamo.router.kv_router import NoWorkers
from dynamo.router.service import RouterService
from dynamo.runtime.rp_client import StreamError
from dynamo.runtime.rp_server import HandlerError
from dynamo.runtime.wire import ErrorCode


class _Policy:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.freed = 0

    async def select(self, pool, request, exclude):
        left = [i for i in self.ids if i not in exclude]
        if not left:
            raise NoWorkers("test pool")
        return SimpleNamespace(worker=SimpleNamespace(instance_id=left[0], address=f"w{left[0]}"))

    def free(self, rid, generated=0) -> None:
        self.freed += 1

    def prefill_complete(self, rid) -> None:
        pass


class _Call:
    def __init__(self, answer) -> None:
        self.answer = answer

    async def next_payloads(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def cancel(self) -> None:
        pass


def _service(answers: dict[int, object]) -> RouterService:
    service = RouterService.__new__(RouterService)
    service.policy = _Policy(sorted(answers))
    service.inhibitor = Inhibitor(5.0)
    service.pool = SimpleNamespace(workers=[SimpleNamespace(instance_id=i) for i in answers], get=lambda i: None)
    service.eid = SimpleNamespace(path="ns.backend.generate", endpoint="generate")
    service.opened = []  # type: ignore[attr-defined]

    async def open_(address, endpoint, payload, prefill_done):
        service.opened.append(address)  # type: ignore[attr-defined]
        return _Call(answers[int(address[1:])])

    async def never_came(request, exclude, ctx) -> bool:
        return False

    async def elsewhere() -> str:
        return ""

    service.workers = SimpleNamespace(open=open_)
    service._worker_came = never_came  # type: ignore[method-assign]
    service.elsewhere = elsewhere  # type: ignore[method-assign]
    return service


def _request() -> PreprocessedRequest:
    return PreprocessedRequest(request_id="r1", model="ada", token_ids=[1, 2, 3])


def _gone() -> StreamError:
    return StreamError("LoRA adapter 'ada' is not loaded", ErrorCode.LORA_NOT_LOADED)


def test_a_worker_without_the_adapter_is_skipped_for_one_that_holds_it():
    service = _service({1: _gone(), 2: [b"out"]})
    call, iid, first = asyncio.run(service._open(_request(), b"", None))  # type: ignore[arg-type]
    assert (iid, first) == (2, [b"out"]) and service.opened == ["w1", "w2"]  # type: ignore[attr-defined]
    assert service.inhibitor.active() == set()  # the worker is fine: its other models go on being routed to it


def test_with_no_worker_holding_it_the_caller_gets_lora_not_loaded():
    service = _service({1: _gone(), 2: _gone()})
    with pytest.raises(HandlerError) as answer:
        asyncio.run(service._open(_request(), b"", None))  # type: ignore[arg-type]
    assert answer.value.code == ErrorCode.LORA_NOT_LOADED
    assert service.inhibitor.active() == set() and service.policy.freed == 2


def test_a_worker_left_out_as_unreachable_may_hold_it_so_the_caller_gets_no_workers():
    """Worker 1 cannot be reached, worker 2 dropped the adapter: the adapter is not known gone (1 may hold it and
    come back), so the answer is `no_workers` (the caller's 503, retry later), not `lora_not_loaded` (a 404)."""
    from dynamo.runtime.rp_client import CannotConnect

    service = _service({1: CannotConnect("connection refused"), 2: _gone()})
    with pytest.raises(HandlerError) as answer:
        asyncio.run(service._open(_request(), b"", None))  # type: ignore[arg-type]
    assert answer.value.code == ErrorCode.NO_WORKERS

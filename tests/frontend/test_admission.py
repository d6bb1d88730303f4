"""Admission's start-up gate (`--router-min-initial-workers`) and its drain wait."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from dynamo.frontend.admission import STARTING_RETRY_AFTER_SECS, Admission, InitialWorkers
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics


def test_initial_workers_gate_opens_at_the_count_and_stays_open():
    up = [0]
    gate = InitialWorkers(2, lambda: up[0])
    assert not gate.check() and "0 up so far" in gate.waiting_message()
    up[0] = 1
    refusal = gate.refusal()
    assert not gate.check()
    assert (refusal.status, refusal.code, refusal.retry_after) == (503, "no_workers", STARTING_RETRY_AFTER_SECS)
    assert "waiting for 2 initial worker(s)" in refusal.message and "1 up so far" in refusal.message
    up[0] = 2
    assert gate.check()
    up[0] = 0  # a scale-down later is not a start-up: no gate again
    assert gate.check()


def test_no_minimum_is_open_from_the_start():
    assert InitialWorkers(0, lambda: 0).check()


def _admission() -> Admission:
    return Admission(SimpleNamespace(), FrontendMetrics())  # type: ignore[arg-type]  # no model is looked up


async def test_drained_waits_for_the_last_request():
    admission = _admission()
    admission.admit("m")
    asyncio.get_running_loop().call_later(0.05, admission.release, "m")
    assert await admission.drained(10)


async def test_drained_waits_for_a_request_admitted_as_the_last_one_ended():
    """A handed-off keep-alive connection delivers one more request just as the last one ends: the waiter wakes
    to find it in flight, and waits for it too (it used to say "not drained" at once, and the request was ended
    with a 503 as one past the drain's bound)."""
    admission = _admission()
    admission.admit("m")
    loop = asyncio.get_running_loop()

    def last_ends_and_one_more_comes() -> None:
        admission.release("m")
        admission.admit("m")  # before the waiter resumes
        loop.call_later(0.05, admission.release, "m")
    loop.call_later(0.05, last_ends_and_one_more_comes)
    assert await admission.drained(10) and admission.inflight == 0


@pytest.mark.parametrize("timeout", [10.0, float("inf")])
async def test_drained_stops_waiting_when_told(timeout):
    admission, now = _admission(), asyncio.Event()
    admission.admit("m")
    asyncio.get_running_loop().call_later(0.05, now.set)
    started = time.monotonic()
    assert not await admission.drained(timeout, unless=now)
    assert time.monotonic() - started < 5


class _Models:
    """The model manager as admission sees it: entries whose workers a test sets, and its change wait."""

    def __init__(self) -> None:
        self.models: dict = {}
        self.retired: dict = {}
        self.list_retired = False

    def serve(self, name: str, *workers: tuple[str, int]) -> None:
        infos = [SimpleNamespace(endpoint=endpoint, instance_id=instance) for endpoint, instance in workers]
        self.models[name] = SimpleNamespace(name=name, decode_workers=lambda: infos,
                                            card=SimpleNamespace(model_type=["chat", "completions"]))

    def get(self, name: str):
        return self.models.get(name)

    def knows(self, name: str) -> bool:
        return True

    def has_workers(self, name: str) -> bool:
        return bool(self.models.get(name) and self.models[name].decode_workers())

    async def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True


async def _never_disconnects() -> dict:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


def test_the_initial_gate_counts_worker_instances_not_model_entries():
    models = _Models()
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    gate = admission.await_initial_workers(2)
    models.serve("base", ("dyn://ns.backend.generate", 1))
    models.serve("base-lora", ("dyn://ns.backend.generate", 1))  # the same worker's LoRA card
    assert not gate.check() and "1 up so far" in gate.waiting_message()
    models.serve("base", ("dyn://ns.backend.generate", 1), ("dyn://ns.backend.generate", 2))
    assert gate.check()


async def test_without_a_worker_wait_a_request_before_the_gate_is_refused_at_once():
    models = _Models()
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    admission.await_initial_workers(1)
    began = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("m", _never_disconnects)
    assert refused.value.status == 503 and refused.value.retry_after == STARTING_RETRY_AFTER_SECS
    assert time.monotonic() - began < 1.0


async def test_with_a_worker_wait_a_request_before_the_gate_waits_for_it():
    models = _Models()
    admission = Admission(models, FrontendMetrics(), wait_for_workers=30.0)  # type: ignore[arg-type]
    admission.await_initial_workers(1)
    request = asyncio.ensure_future(admission.served_entry("m", _never_disconnects))
    await asyncio.sleep(0.3)
    assert not request.done() and admission.worker_wait.waiting == 1, "held, not refused"
    models.serve("m", ("dyn://ns.backend.generate", 1))
    entry = await asyncio.wait_for(request, 10)
    assert entry.name == "m" and admission.worker_wait.waiting == 0


async def test_with_a_worker_wait_a_request_is_refused_once_the_wait_ends_before_the_gate():
    models = _Models()
    admission = Admission(models, FrontendMetrics(), wait_for_workers=0.3)  # type: ignore[arg-type]
    admission.await_initial_workers(1)
    began = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await admission.served_entry("m", _never_disconnects)
    assert refused.value.status == 503 and "initial worker" in refused.value.message
    assert time.monotonic() - began >= 0.3


async def test_kserve_readiness_follows_the_initial_gate():
    from dynamo.frontend.kserve import KServeService, pb

    models = _Models()
    admission = Admission(models, FrontendMetrics())  # type: ignore[arg-type]
    admission.await_initial_workers(2)
    service = KServeService(SimpleNamespace(admission=admission, models=models))
    models.serve("m", ("dyn://ns.backend.generate", 1))
    assert not (await service.server_ready(pb.ServerReadyRequest(), None)).ready
    assert not (await service.model_ready(pb.ModelReadyRequest(name="m"), None)).ready
    models.serve("m", ("dyn://ns.backend.generate", 1), ("dyn://ns.backend.generate", 2))
    assert (await service.server_ready(pb.ServerReadyRequest(), None)).ready
    assert (await service.model_ready(pb.ModelReadyRequest(name="m"), None)).ready
    admission.begin_drain()
    assert not (await service.server_ready(pb.ServerReadyRequest(), None)).ready

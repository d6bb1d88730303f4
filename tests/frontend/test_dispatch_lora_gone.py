"""A worker that answers `lora_not_loaded` (it dropped the request's LoRA adapter before this frontend saw its
card go) over real request-plane workers: the request goes to another worker holding the adapter, decode or
prefill, and the refusing worker is not inhibited (it serves its other models); with no holder left the adapter
is gone, a 404 `model_not_found`, never the 400 that blames the client."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.request_handle import RequestHandle
from dynamo.llm.model_card import WorkerType
from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from dynamo.runtime.rp_server import HandlerError
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.scripted_worker import ScriptedWorker
from tests.frontend.helpers_cards import card, model, request

DECODE, PREFILL = EndpointId("dynamo", "backend", "generate"), EndpointId("dynamo", "prefill", "generate")


class AdapterDropped(ScriptedWorker):
    """A worker that no longer holds the adapter: refuses every request before generating anything."""

    async def generate(self, request: PreprocessedRequest, ctx):
        self.requests.append(request)
        raise HandlerError("LoRA adapter 'm' is not loaded on this worker", ErrorCode.LORA_NOT_LOADED)
        yield  # pragma: no cover - makes this an async generator


@pytest.fixture
async def workers():
    client = RequestPlaneClient()
    started = {"dropped": AdapterDropped(), "holder": ScriptedWorker(count=2),
               "dropped_prefill": AdapterDropped(), "holder_prefill": ScriptedWorker(count=1)}
    for worker in started.values():
        await worker.server.start()
    try:
        yield client, started
    finally:
        await client.close()
        for worker in started.values():
            await worker.server.close(linger=0.1)


async def _run(dispatcher: Dispatcher, entry) -> list[int]:
    tokens = []
    async for outputs in dispatcher.stream(entry, request(), RequestHandle(), "old"):
        tokens += [t for out in outputs for t in out.token_ids]
    return tokens


async def test_a_worker_that_dropped_the_adapter_hands_the_request_to_a_holder(workers):
    client, w = workers
    inhibitor = Inhibitor(60)
    for first in (1, 2):  # round-robin: the dropped worker is tried first in one of the two requests
        entry = model(WorkerInfo(1, DECODE, card("old"), w["dropped"].address),
                      WorkerInfo(2, DECODE, card("old"), w["holder"].address))
        dispatcher = Dispatcher(client, RoundRobinPolicy(), 0, FrontendMetrics(), inhibitor=inhibitor)
        assert await asyncio.wait_for(_run(dispatcher, entry), 30) == [100, 101], first
    assert len(w["holder"].requests) == 2 and len(w["dropped"].requests) >= 1
    assert inhibitor.active() == set(), "not inhibited: it serves its other models"


async def test_no_holder_left_is_a_404_not_a_400(workers):
    client, w = workers
    entry = model(WorkerInfo(1, DECODE, card("old"), w["dropped"].address))
    dispatcher = Dispatcher(client, RoundRobinPolicy(), 3, FrontendMetrics())
    with pytest.raises(ApiError) as gone:
        await asyncio.wait_for(_run(dispatcher, entry), 30)
    assert (gone.value.status, gone.value.code) == (404, "model_not_found")
    assert len(w["dropped"].requests) == 1


async def test_an_unreachable_worker_may_still_hold_the_adapter_so_it_is_a_503_not_a_404(workers):
    """One worker cannot be reached, the other dropped the adapter: the adapter is not known gone (the unreachable
    one may hold it, and come back), so the client is told to retry (503), not that the model does not exist."""
    client, w = workers
    dead = ScriptedWorker(count=1)
    await dead.server.start()
    address = dead.address
    await dead.server.close(linger=0)
    policy = RoundRobinPolicy()  # one turn for both requests: each worker is tried first once
    for first in (1, 2):
        entry = model(WorkerInfo(1, DECODE, card("old"), address), WorkerInfo(2, DECODE, card("old"), w["dropped"].address))
        dispatcher = Dispatcher(client, policy, 3, FrontendMetrics(), inhibitor=Inhibitor(60))
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(_run(dispatcher, entry), 30)
        assert refused.value.status == 503, (first, refused.value.code)


async def test_a_prefill_worker_that_dropped_the_adapter_hands_the_prefill_to_a_holder(workers):
    client, w = workers
    inhibitor = Inhibitor(60)
    prefill = PrefillOrchestrator(client, RoundRobinPolicy(), DisaggPolicy(), DisaggMetrics(CollectorRegistry(), "t"),
                                  inhibitor=inhibitor)
    entry = model(WorkerInfo(1, DECODE, card("old"), w["holder"].address),
                  WorkerInfo(3, PREFILL, card("old", WorkerType.PREFILL), w["dropped_prefill"].address),
                  WorkerInfo(4, PREFILL, card("old", WorkerType.PREFILL), w["holder_prefill"].address))
    for _ in range(2):
        await asyncio.wait_for(prefill.prefill(entry, request(), RequestHandle(), "old"), 30)
    assert len(w["holder_prefill"].requests) == 2 and len(w["dropped_prefill"].requests) >= 1
    assert inhibitor.active() == set()


async def test_no_prefill_worker_holding_the_adapter_is_a_404_not_a_failed_prefill(workers):
    """Under --enforce-disagg: the adapter is gone (404), not a prefill failure (503)."""
    client, w = workers
    metrics = DisaggMetrics(CollectorRegistry(), "t")
    prefill = PrefillOrchestrator(client, RoundRobinPolicy(), DisaggPolicy(enforce=True), metrics)
    entry = model(WorkerInfo(1, DECODE, card("old"), w["holder"].address),
                  WorkerInfo(3, PREFILL, card("old", WorkerType.PREFILL), w["dropped_prefill"].address))
    with pytest.raises(ApiError) as gone:
        await asyncio.wait_for(prefill.prefill(entry, request(), RequestHandle(), "old"), 30)
    assert (gone.value.status, gone.value.code) == (404, "model_not_found")
    assert metrics.decode_only.labels(entry.name)._value.get() == 0  # no decode-only fallback counted


async def test_without_enforce_the_decode_worker_prefills_when_no_prefill_worker_holds_the_adapter(workers):
    """The decode worker may still hold the adapter (loaded on decode workers only): it prefills, and answers
    lora_not_loaded itself (a 404 from the dispatcher) if it does not."""
    client, w = workers
    registry = CollectorRegistry()
    prefill = PrefillOrchestrator(client, RoundRobinPolicy(), DisaggPolicy(), DisaggMetrics(registry, "t"))
    entry = model(WorkerInfo(1, DECODE, card("old"), w["holder"].address),
                  WorkerInfo(3, PREFILL, card("old", WorkerType.PREFILL), w["dropped_prefill"].address))
    assert await asyncio.wait_for(prefill.prefill(entry, request(), RequestHandle(), "old"), 30) is None
    said = {sample.labels["reason"]: sample.value for family in registry.collect() for sample in family.samples
            if sample.name == "t_local_prefills_total"}
    assert said == {"lora_not_loaded": 1.0}  # why the decode worker prefilled: not a failed prefill worker


def test_lora_not_loaded_from_any_path_is_a_404():
    from dynamo.frontend.errors import from_stream_error
    from dynamo.runtime.rp_client import StreamError

    exc = StreamError("LoRA adapter 'ada' is not loaded", ErrorCode.LORA_NOT_LOADED)
    for model_name in ("ada", None):
        answer = from_stream_error(exc, model_name)
        assert (answer.status, answer.code) == (404, "model_not_found"), model_name
    assert "`ada`" in from_stream_error(exc, "ada").message


async def test_a_lora_bounce_is_told_apart_from_a_lost_worker_in_the_log(workers, caplog):
    """Counted under Dynamo's `new_request` migration label (labels unchanged); the log line says why."""
    client, w = workers
    entry = model(WorkerInfo(1, DECODE, card("old"), w["dropped"].address),
                  WorkerInfo(2, DECODE, card("old"), w["holder"].address))
    dispatcher = Dispatcher(client, RoundRobinPolicy(), 0, FrontendMetrics())
    with caplog.at_level("INFO", logger="dynamo.frontend"):
        for _ in range(2):  # round-robin: one of the two goes to the dropped worker first
            await asyncio.wait_for(_run(dispatcher, entry), 30)
    assert "retry: lora_not_loaded" in caplog.text

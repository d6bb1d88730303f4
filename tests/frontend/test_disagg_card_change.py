"""Disaggregated serving and a rolling update's card switch: a request prepared for one card reaches no prefill
worker of another. Refused before its prefill is routed when the model already switched (`Dispatcher._prefilled`),
and by `PrefillOrchestrator.prefill` itself once it routed to a prefill worker of another card (the check a request
that waited in the router's queue meets): a retryable 503 `model_card_changed` (CardChanged) either way, over real
request-plane workers."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import CardChanged
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.request_handle import RequestHandle
from dynamo.llm.model_card import WorkerType
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.scripted_worker import ScriptedWorker
from tests.frontend.helpers_cards import card, model, request

DECODE, PREFILL = EndpointId("dynamo", "backend", "generate"), EndpointId("dynamo", "prefill", "generate")


def new_card_model(decode: ScriptedWorker, prefill: ScriptedWorker) -> ModelEntry:
    """The model as served once the rollout switched it: the new card's decode and prefill worker."""
    return model(WorkerInfo(1, DECODE, card("new"), decode.address),
                 WorkerInfo(2, PREFILL, card("new", WorkerType.PREFILL), prefill.address), served="new")


@pytest.fixture
async def workers():
    client = RequestPlaneClient()
    decode, prefill = ScriptedWorker(count=2), ScriptedWorker(count=1)
    for worker in (decode, prefill):
        await worker.server.start()
    try:
        yield client, decode, prefill
    finally:
        await client.close()
        for worker in (decode, prefill):
            await worker.server.close(linger=0.1)


def orchestrator(client: RequestPlaneClient) -> PrefillOrchestrator:
    return PrefillOrchestrator(client, RoundRobinPolicy(), DisaggPolicy(), DisaggMetrics(CollectorRegistry(), "t"))


async def test_a_request_of_the_old_card_is_refused_before_its_prefill(workers):
    client, decode, prefill = workers
    entry = new_card_model(decode, prefill)
    dispatcher = Dispatcher(client, RoundRobinPolicy(), 0, FrontendMetrics(), orchestrator(client))
    with pytest.raises(CardChanged):
        await asyncio.wait_for(anext(dispatcher.stream(entry, request(), RequestHandle(), "old")), 30)
    assert prefill.requests == [] and decode.requests == []


async def test_a_prefill_worker_of_another_card_is_refused_after_routing(workers):
    """`prefill` checks the card of the prefill worker it routed to: one that waited in the router's queue may be
    routed over the new card's prefill workers, which its tokens were not made for. Here nothing waits: the model
    already switched when `prefill` is called (`Dispatcher._prefilled`'s check skipped), so the routed worker is the
    new card's at once."""
    client, decode, prefill = workers
    entry = new_card_model(decode, prefill)
    with pytest.raises(CardChanged):
        await asyncio.wait_for(orchestrator(client).prefill(entry, request(), RequestHandle(), "old"), 30)
    assert prefill.requests == []
    params = await asyncio.wait_for(orchestrator(client).prefill(entry, request(), RequestHandle(), "new"), 30)
    assert len(prefill.requests) == 1 and params is None  # its own card's prefill worker takes it

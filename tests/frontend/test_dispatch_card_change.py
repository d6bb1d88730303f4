"""A request prepared for one model card never reaches a worker of another: a rolling update that switches
the served card (model_generations) while the request is on its way (here: migrating off a stalled worker)
gets it a retryable 503 `model_card_changed`, not old-card tokens on a new-card worker."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.errors import ApiError, CardChanged
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.llm.worker_client import Deadlines
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.scripted_worker import ScriptedWorker

EID = EndpointId("dynamo", "backend", "generate")


def card(mdcsum: str) -> ModelDeploymentCard:
    c = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096, kv_cache_block_size=16)
    c.mdcsum = mdcsum
    return c


async def test_a_request_of_the_old_card_is_not_sent_to_a_new_cards_worker():
    client = RequestPlaneClient()
    stalled, other = ScriptedWorker(count=1, hang=True), ScriptedWorker(count=3)
    for worker in (stalled, other):
        await worker.server.start()
    try:
        old, new = card("old"), card("new")
        entry = ModelEntry("m", None, old)  # type: ignore[arg-type]  # no pipeline: nothing to tokenize
        entry.workers[1] = WorkerInfo(1, EID, old, stalled.address)
        dispatcher = Dispatcher(client, RoundRobinPolicy(), 3, FrontendMetrics(), None, Inhibitor(60),
                                Deadlines(idle=0.5))
        request = PreprocessedRequest(request_id="r1", model="m", token_ids=[1, 2, 3],
                                      stop_conditions=StopConditions(max_tokens=3))
        stream = dispatcher.stream(entry, request, RequestHandle(), "old")
        assert [out.token_ids for out in await asyncio.wait_for(anext(stream), 30)] == [[100]]
        entry.adopt(new, None, None)  # type: ignore[arg-type]  # the rollout's switch, mid-stream
        entry.workers = {2: WorkerInfo(2, EID, new, other.address)}
        entry.version += 1
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(anext(stream), 30)  # the stalled worker's stream migrates...
        assert (refused.value.status, refused.value.code) == (503, "model_card_changed")
        assert other.requests == []  # ...but not onto the other card's worker
    finally:
        await client.close()
        for worker in (stalled, other):
            await worker.server.close(linger=0.1)


async def test_the_card_a_request_was_prepared_for_is_refused_before_any_routing_is_booked():
    """The card is taken when the request is prepared and carried to the stream: a switch between its preparation
    and its stream's start (its tokenization on the prep pool) is refused before the routing policy chooses, so
    nothing is booked for it (here: the round robin's turn does not move: the next request goes to the first
    worker, as it would have without the refused one)."""
    client = RequestPlaneClient()
    workers = {2: ScriptedWorker(count=2), 3: ScriptedWorker(count=2)}
    for worker in workers.values():
        await worker.server.start()
    try:
        new = card("new")
        entry = ModelEntry("m", None, new)  # type: ignore[arg-type]  # already switched to the new card
        entry.workers = {iid: WorkerInfo(iid, EID, new, w.address) for iid, w in workers.items()}
        dispatcher = Dispatcher(client, RoundRobinPolicy(), 0, FrontendMetrics())
        request = PreprocessedRequest(request_id="r2", model="m", token_ids=[1, 2, 3],
                                      stop_conditions=StopConditions(max_tokens=2))
        with pytest.raises(CardChanged) as refused:
            await asyncio.wait_for(anext(dispatcher.stream(entry, request, RequestHandle(), "old")), 30)
        assert refused.value.code == "model_card_changed" and not refused.value.unsent  # the run decides that
        outputs = [out async for batch in dispatcher.stream(entry, request, RequestHandle(), "new") for out in batch]
        assert [o.token_ids for o in outputs] == [[100], [101]]
        assert (len(workers[2].requests), len(workers[3].requests)) == (1, 0)
    finally:
        await client.close()
        for worker in workers.values():
            await worker.server.close(linger=0.1)

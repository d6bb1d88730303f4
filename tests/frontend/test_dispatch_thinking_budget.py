"""The `Dispatcher`'s side of the reasoning budget, on real request-plane workers on loopback: the
budget never reaches the worker, the stream is cut at it and closed with the tag, the request goes
on pinned to the worker holding its cache (where round-robin would go elsewhere), and should that
worker fail afterwards, the migration is not held to the pin."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.thinking_budget import ThinkMarkers
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.llm.worker_client import Deadlines
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.scripted_worker import ScriptedWorker

GENEROUS = 30.0
PROMPT = [1, 2, 3]
CLOSE = 999  # the closing tag, one token; output starts inside reasoning (as deepseek_r1's template opens it)


@pytest.fixture
async def cluster():
    """Two scripted workers (ids 1 and 2: round-robin's order) behind a `Dispatcher` whose model
    closes reasoning with CLOSE; stopped afterwards."""
    client = RequestPlaneClient()
    workers = [ScriptedWorker(count=3, hang=True), ScriptedWorker(count=1)]
    card = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096, kv_cache_block_size=16)
    entry = ModelEntry("m", None, card)  # type: ignore[arg-type]  # no pipeline: nothing to tokenize
    entry.think_markers = ThinkMarkers((998,), (CLOSE,), starts_inside=True, close=(CLOSE,))
    for iid, worker in enumerate(workers, 1):
        await worker.server.start()
        entry.workers[iid] = WorkerInfo(iid, EndpointId("dynamo", "backend", "generate"), card, worker.address)
    dispatcher = Dispatcher(client, RoundRobinPolicy(), 1, FrontendMetrics(), None, Inhibitor(60),
                            Deadlines(idle=0.5))
    yield dispatcher, entry, workers
    await client.close()
    for worker in workers:
        await worker.server.close(linger=0.1)


async def test_the_answer_goes_on_where_the_reasoning_is_cached_and_migrates_unpinned(cluster):
    dispatcher, entry, (first, second) = cluster
    request = PreprocessedRequest(request_id="r1", model="m", token_ids=PROMPT,
                                  stop_conditions=StopConditions(max_tokens=20, max_thinking_tokens=1))

    async def collect() -> list[int]:
        return [t async for batch in dispatcher.stream(entry, request, RequestHandle(), entry.card.mdcsum)
                for out in batch for t in out.token_ids]

    tokens = await asyncio.wait_for(collect(), GENEROUS)
    # One reasoning token, the tag; the continuation's three (then it hangs: migrated); the last worker's one.
    assert tokens == [100, CLOSE, 100, 101, 102, 100]
    opened, resumed = first.requests
    assert opened.stop_conditions.max_thinking_tokens is None  # enforced here, not asked of the worker
    assert resumed.token_ids == PROMPT + [100, CLOSE] and resumed.stop_conditions.max_tokens == 18
    assert resumed.routing is not None and resumed.routing.backend_instance_id == 1  # round-robin's turn was 2
    (migrated,) = second.requests
    assert migrated.token_ids == PROMPT + [100, CLOSE, 100, 101, 102]
    assert migrated.routing is None or migrated.routing.backend_instance_id is None
    reached = dispatcher.metrics.registry.get_sample_value("dynamo_frontend_model_thinking_budget_reached_total",
                                                           {"model": "m"})
    assert reached == 1


async def test_a_budget_spent_at_the_last_token_ends_the_stream_there(cluster):
    """The reasoning budget runs out on the request's last allowed token: nothing is left to go on with, the stream
    ends with the tag (its worker's booking freed under the request's id), no continuation is sent."""
    dispatcher, entry, (first, second) = cluster
    request = PreprocessedRequest(request_id="r2", model="m", token_ids=PROMPT,
                                  stop_conditions=StopConditions(max_tokens=2, max_thinking_tokens=1))
    tokens = [t async for batch in dispatcher.stream(entry, request, RequestHandle(), entry.card.mdcsum)
              for out in batch for t in out.token_ids]
    assert tokens == [100, CLOSE]
    assert len(first.requests) == 1 and second.requests == []


async def test_the_worker_cut_at_the_budget_is_stopped_not_cancelled(cluster):
    """Ending a stream at the reasoning budget is the frontend's choice, as a stop string's is: the worker ends it as
    `stopped` (no cancellation counted); the continuation that hung past the idle deadline is still a cancellation."""
    dispatcher, entry, (first, _) = cluster
    statuses: list[str] = []
    first.server.on_request_end = lambda endpoint, status, *_: statuses.append(status)
    request = PreprocessedRequest(request_id="r3", model="m", token_ids=PROMPT,
                                  stop_conditions=StopConditions(max_tokens=20, max_thinking_tokens=1))
    [_ async for _ in dispatcher.stream(entry, request, RequestHandle(), entry.card.mdcsum)]
    for _ in range(100):
        if len(statuses) == 2:
            break
        await asyncio.sleep(0.01)
    assert statuses == ["stopped", "cancelled"]

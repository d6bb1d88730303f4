"""`query_instance_id` during a rolling update (`annotations.routed_workers`): the workers it answers are of the
card the prompt was tokenized for (a decode or prefill worker of another card, routed over a pool read before the
switch, is CardChanged), and, while the model's workers span two namespaces, its decode and prefill worker come
from one set, as `Dispatcher.stream` would send the request; the query is not counted as a request of its set."""

from __future__ import annotations

import json
import random

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend import annotations
from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import CardChanged
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import WorkerType
from dynamo.router.policy import RandomPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.frontend.helpers_cards import card, model, request


def worker(iid: int, namespace: str, mdcsum: str, prefill: bool = False) -> WorkerInfo:
    eid = EndpointId(namespace, "prefill" if prefill else "backend", "generate")
    kind = WorkerType.PREFILL if prefill else WorkerType.DECODE
    return WorkerInfo(iid, eid, card(mdcsum, kind), f"tcp://127.0.0.1:{9000 + iid}")  # never dialled: a query


@pytest.fixture
async def dispatcher():
    """Random routing (a query books nothing: a round robin would answer the same workers each time)."""
    client = RequestPlaneClient()
    prefill = PrefillOrchestrator(client, RandomPolicy(rng=random.Random(1)), DisaggPolicy(),
                                  DisaggMetrics(CollectorRegistry(), "t"))
    try:
        yield Dispatcher(client, RandomPolicy(rng=random.Random(2)), 0, FrontendMetrics(), prefill,
                         rng=random.Random(3))
    finally:
        await client.close()


async def answered(d: Dispatcher, entry: ModelEntry, card: str = "old") -> dict:
    """The unary answer's `nvext.worker_id`."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
    await annotations.answer_routing_query(d, entry, request(), card, True, False, send)
    return json.loads(b"".join(m.get("body", b"") for m in sent))["nvext"]["worker_id"]


async def test_a_decode_worker_of_another_card_is_not_answered(dispatcher):
    """The entry still says the old card, but the pool routed over holds the new card's worker only."""
    entry = model(worker(1, "dyn", "new"))
    with pytest.raises(CardChanged):
        await answered(dispatcher, entry)


async def test_a_prefill_worker_of_another_card_is_not_answered(dispatcher):
    entry = model(worker(1, "dyn", "old"), worker(2, "dyn", "new", prefill=True))
    with pytest.raises(CardChanged):
        await answered(dispatcher, entry)
    with pytest.raises(CardChanged):
        await dispatcher.prefill.query(entry, request(), None, "old")
    assert await dispatcher.prefill.query(entry, request(), None, "new") == 2  # its own card's prefill worker


async def test_the_decode_and_prefill_worker_answered_share_a_worker_set(dispatcher):
    entry = model(worker(1, "dyn-a", "old"), worker(2, "dyn-a", "old", prefill=True),
                  worker(3, "dyn-b", "old"), worker(4, "dyn-b", "old"), worker(5, "dyn-b", "old", prefill=True))
    namespace = {w.instance_id: w.endpoint.namespace for w in entry.workers.values()}
    answers = [await answered(dispatcher, entry) for _ in range(40)]
    pairs = [(namespace[a["decode_worker_id"]], namespace[a["prefill_worker_id"]]) for a in answers]
    assert all(decode == prefill for decode, prefill in pairs), pairs
    assert {decode for decode, _ in pairs} == {"dyn-a", "dyn-b"}  # both sets answered
    counted = [s for m in dispatcher.metrics.registry.collect() for s in m.samples
               if s.name == "dynamo_frontend_worker_set_requests_total"]
    assert counted == []  # a query is no request of its set: the gateway's request that follows is

"""The helpers the dispatcher and the prefill orchestrator share: `SetRouting.reroute` (a choice outside the
request's worker set is freed and routed again, a bounded number of times), `refuse_worker_card` with the routed
booking freed, and `PrefillOrchestrator.query` probing its set's limit once. No worker is ever sent to."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import NO_PREFILL_WORKERS, DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import ApiError, CardChanged
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.worker_sets import STRAY_RETRIES, Placement, Reroute, SetRouting
from dynamo.llm.model_card import WorkerType
from dynamo.router.policy import Choice, Role, RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId
from tests.frontend import helpers_cards
from tests.frontend.test_worker_sets import model, ns_of, request


class Elsewhere(RoundRobinPolicy):
    """Always chooses a worker of `role` the request was told to exclude (one that joined another set while it
    waited in the queue); records what it freed."""

    def __init__(self, role: Role) -> None:
        super().__init__()
        self.role, self.freed = role, []

    async def select(self, pool, request, exclude):
        outside = [w for w in pool.workers if w.instance_id in exclude]
        if pool.role is self.role and outside:
            return Choice(outside[0])
        return await super().select(pool, request, exclude)

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        self.freed.append(request_id)
        super().free(request_id, output_tokens)


def worker_of(entry, namespace: str, role: Role) -> WorkerInfo:
    return next(w for w in entry.pool(role).workers if ns_of(entry, w.instance_id) == namespace)


def test_reroute_frees_a_stray_choice_and_bounds_the_retries():
    entry = model({"a": (1, 1), "b": (1, 1)})
    routing, pool = SetRouting(random.Random(0)), entry.pool(Role.DECODE)
    own, other = worker_of(entry, "a", Role.DECODE), worker_of(entry, "b", Role.DECODE)
    placement, freed = Placement("a"), []
    assert routing.reroute(placement, pool, request(), own, freed.append) is Reroute.KEEP and freed == []
    answers = [routing.reroute(placement, pool, request(), other, freed.append) for _ in range(STRAY_RETRIES + 1)]
    assert answers == [Reroute.AGAIN] * STRAY_RETRIES + [Reroute.GIVE_UP]
    assert freed == ["r"] * (STRAY_RETRIES + 1)  # every stray booking freed, the last one too
    assert routing.reroute(placement, pool, request(), own, freed.append) is Reroute.KEEP and placement.strays == 0


def orchestrator(policy, enforce: bool = False) -> PrefillOrchestrator:
    return PrefillOrchestrator(None, policy, DisaggPolicy(enforce=enforce),  # type: ignore[arg-type]  # no sends
                               DisaggMetrics(CollectorRegistry(), "t"))


async def test_a_prefill_given_other_sets_workers_again_and_again_is_prefilled_locally():
    entry, policy = model({"a": (1, 1), "b": (1, 1)}), Elsewhere(Role.PREFILL)
    o = orchestrator(policy)
    params = await asyncio.wait_for(o.prefill(entry, request(), RequestHandle(), "", Placement("a")), 10)
    assert params is None and policy.freed == ["r:prefill"] * (STRAY_RETRIES + 1)
    assert o.metrics.local.labels("m", NO_PREFILL_WORKERS)._value.get() == 1


async def test_under_enforce_disagg_a_prefill_that_strays_too_often_is_a_503():
    entry, policy = model({"a": (1, 1), "b": (1, 1)}), Elsewhere(Role.PREFILL)
    with pytest.raises(ApiError) as raised:
        await asyncio.wait_for(orchestrator(policy, True).prefill(entry, request(), RequestHandle(), "",
                                                                  Placement("a")), 10)
    assert raised.value.status == 503 and policy.freed == ["r:prefill"] * (STRAY_RETRIES + 1)


def card_model(prefill_card: str, decode_card: str):
    """Model "m" serving card "old" with a decode and a prefill worker of the given cards (nothing listens)."""
    return helpers_cards.model(
        WorkerInfo(1, EndpointId("dynamo", "backend", "generate"), helpers_cards.card(decode_card), "127.0.0.1:1"),
        WorkerInfo(2, EndpointId("dynamo", "prefill", "generate"), helpers_cards.card(prefill_card, WorkerType.PREFILL),
                   "127.0.0.1:2"))


async def test_a_prefill_worker_of_another_card_is_refused_and_its_booking_freed():
    policy = Elsewhere(Role.PREFILL)
    with pytest.raises(CardChanged):
        await orchestrator(policy).prefill(card_model("new", "old"), helpers_cards.request(), RequestHandle(), "old")
    assert policy.freed == ["r:prefill"]


async def test_a_decode_worker_of_another_card_is_refused_and_its_booking_freed():
    policy = Elsewhere(Role.DECODE)
    dispatcher = Dispatcher(None, policy, 0, FrontendMetrics())  # type: ignore[arg-type]  # refused before sending
    with pytest.raises(CardChanged):
        await anext(dispatcher.stream(card_model("old", "new"), helpers_cards.request(), RequestHandle(), "old"))
    assert policy.freed == ["r"]


class CountingSets(SetRouting):
    def __init__(self) -> None:
        super().__init__(random.Random(0))
        self.probes: list[Role] = []

    def limit(self, entry, placement, pool, request, exclude, *, probe=False):
        self.probes.append(pool.role)
        return super().limit(entry, placement, pool, request, exclude, probe=probe)


async def test_query_probes_the_prefill_pools_limit_once():
    entry, sets = model({"a": (1, 1), "b": (1, 1)}), CountingSets()
    o = PrefillOrchestrator(None, RoundRobinPolicy(), DisaggPolicy(),  # type: ignore[arg-type]  # no sends
                            DisaggMetrics(CollectorRegistry(), "t"), sets=sets)
    chosen = await o.query(entry, request(), Placement("b"))
    assert chosen == worker_of(entry, "b", Role.PREFILL).instance_id  # its own set's, as before
    assert sets.probes == [Role.PREFILL]

"""The router service's pool role (router/service.py): a global router sends a disaggregated request's prefill
to the prefill pool's `python -m dynamo.router`, so the service routes its workers as the prefill pool their
model cards say they are. It honours the caller's `prefill_worker_id` there, and its metrics say `prefill`.
Workers that are not all prefill workers, or whose cards are not seen yet, are a decode pool."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import generate_latest

from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions
from dynamo.router.policy import Role
from dynamo.router.service import OverlapScores, RouteQuery, encoder
from tests.fixtures.procs import metric_value
from tests.router.service_fakes import EID, card, card_put, generate, service, worker_joins, worker_leaves

PREFILL = card(worker_type="prefill")


def prefill_request(rid: str, **pins) -> PreprocessedRequest:
    """What the frontend (through a global router) sends a prefill worker (disagg.py)."""
    return PreprocessedRequest(request_id=f"{rid}:prefill", model="llama", token_ids=list(range(32)),
                               prefill_only=True, stop_conditions=StopConditions(max_tokens=1),
                               routing=RoutingHints(**pins) if pins else None)


def test_prefill_workers_make_a_prefill_pool_and_the_decode_route_goes(caplog):
    svc = service()
    assert svc.pool.role is Role.DECODE  # no card seen yet
    with caplog.at_level(logging.INFO, logger="dynamo.router.service"):
        worker_joins(svc, 1, PREFILL)
        worker_joins(svc, 2, PREFILL)
    assert (svc.pool.role, svc.pool.name) == (Role.PREFILL, f"{EID.path}/prefill")
    assert list(svc.policy.routes) == [f"{EID.path}/prefill"]  # nothing left booked or reported as decode
    assert sorted(w.instance_id for w in svc.policy.routes[svc.pool.name].pool.workers) == [1, 2]
    said = [r.getMessage() for r in caplog.records if "pool" in r.getMessage() and "routing them as" in r.getMessage()]
    assert said == [f"{EID.path}: the workers' model cards say prefill workers: routing them as a prefill pool"]


@pytest.mark.parametrize("types", [("aggregated",), ("decode",), ("prefill", "decode")])
def test_workers_not_all_prefill_are_a_decode_pool(types):
    svc = service()
    for iid, worker_type in enumerate(types, 1):
        worker_joins(svc, iid, card(worker_type=worker_type))
    assert svc.pool.role is Role.DECODE and list(svc.policy.routes) == [EID.path]


def test_the_role_follows_the_workers_when_they_change():
    svc = service()
    worker_joins(svc, 1, PREFILL)
    worker_joins(svc, 2, card(worker_type="decode"))
    assert svc.pool.role is Role.DECODE
    worker_leaves(svc, 2, card(worker_type="decode"))
    assert svc.pool.role is Role.PREFILL and list(svc.policy.routes) == [f"{EID.path}/prefill"]


def test_a_prefill_pin_is_honoured_and_a_decode_pin_is_not_applied_to_prefill_workers():
    svc = service()
    worker_joins(svc, 1, PREFILL)
    worker_joins(svc, 2, PREFILL)
    out = asyncio.run(generate(svc, prefill_request("r1", prefill_worker_id=2, decode_worker_id=7)))
    assert out and svc.opened == ["w2"]  # type: ignore[attr-defined]


def test_a_prefill_is_counted_as_one_by_the_router_metrics():
    svc = service()
    worker_joins(svc, 1, PREFILL)

    async def book_and_read() -> str:
        choice = await svc.policy.select(svc.pool, prefill_request("r2"), set())  # booked, not freed yet
        assert choice.worker.instance_id == 1
        return generate_latest(svc.registry).decode()  # type: ignore[attr-defined]

    text = asyncio.run(book_and_read())
    assert metric_value(text, "dynamo_component_router_input_sequence_tokens_count", {"phase": "prefill"}) == 1
    assert metric_value(text, "dynamo_component_router_input_sequence_tokens_count", {"phase": "aggregated"}) is None
    assert metric_value(text, "dynamo_component_worker_active_prefill_tokens", {"worker_type": "prefill"}) == 32
    assert metric_value(text, "dynamo_component_router_overlap_blocks_lost_count", {"worker_type": "prefill"}) == 1


def test_overlap_scores_of_a_prefill_pool_before_its_first_worker_are_empty():
    svc = service()
    card_put(svc, 1, PREFILL)  # its card seen, its instance not yet: a prefill pool without a worker
    assert svc.pool.role is Role.PREFILL and svc.pool.name not in svc.policy.routes

    async def ask() -> list[bytes]:
        return [item async for item in svc.get_overlap_scores(RouteQuery(token_ids=[1, 2, 3]), None)]  # type: ignore

    (raw,) = asyncio.run(ask())
    assert raw == encoder.encode(OverlapScores(block_size=4, scores=[]))

"""Worker sets (`worker_sets.py`) steered by what this frontend knows of their workers: inhibited (draining)
workers send requests to the other set, a disaggregated model's requests go to sets with both roles, a choice
outside the request's set is told (`stray`), probes move nothing, the per-set series go with their sets, a
session stays in its bound worker's set, and a model whose roles were started in different namespaces is said
once."""

from __future__ import annotations

import logging
import random
from collections import Counter

from dynamo.frontend.worker_sets import Placement, SetRouting
from dynamo.llm.protocol import RoutingHints
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy, Role, WorkerInfo
from dynamo.router.session_affinity import SessionAffinityPolicy
from dynamo.runtime.records import EndpointId
from dynamo.runtime.wire import ErrorCode
from tests.frontend.test_worker_sets import card, counting, model, ns_of, request


def decode_of(entry, namespace: str) -> set[int]:
    return {w.instance_id for w in entry.pool(Role.DECODE).workers if ns_of(entry, w.instance_id) == namespace}


def allowed(entry, pool, limit: set[int]) -> set[str]:
    return {ns_of(entry, w.instance_id) for w in pool.workers if w.instance_id not in limit}


def draining(*ids: int) -> Inhibitor:
    inhibitor = Inhibitor(60.0)
    for iid in ids:
        inhibitor.inhibit(iid, ErrorCode.DRAINING)
    return inhibitor


def test_a_set_whose_workers_are_all_inhibited_gets_no_new_requests():
    """The old generation drains: every request is drawn into the new set, however many old workers there are."""
    entry = model({"old": (6, 1), "new": (2, 1)})
    routing = SetRouting(random.Random(5), inhibitor=draining(*decode_of(entry, "old")))
    assert {routing.place(entry, request()).namespace for _ in range(200)} == {"new"}


def test_a_set_is_weighted_by_its_healthy_decode_workers():
    entry = model({"a": (4, 1), "b": (4, 1)})
    a = sorted(decode_of(entry, "a"))
    routing = SetRouting(random.Random(9), inhibitor=draining(*a[:3]))  # set a: 1 healthy, set b: 4
    draws = Counter(routing.place(entry, request()).namespace for _ in range(4000))
    assert abs(draws["a"] / 4000 - 0.2) < 0.04, draws


def test_with_every_worker_inhibited_the_draw_is_as_without():
    entry = model({"a": (1, 1), "b": (1, 1)})
    routing = SetRouting(random.Random(2), inhibitor=draining(*decode_of(entry, "a"), *decode_of(entry, "b")))
    assert {routing.place(entry, request()).namespace for _ in range(200)} == {"a", "b"}


def test_a_request_whose_set_is_all_inhibited_moves_to_a_healthy_set():
    """Before, the inhibitor's fail-open sent it to the inhibited workers once the other set was excluded."""
    entry = model({"a": (2, 1), "b": (1, 1)})
    inhibitor = draining(*decode_of(entry, "a"))
    routing = SetRouting(random.Random(0), inhibitor=inhibitor)
    placement, pool = Placement("a"), entry.pool(Role.DECODE)
    limit = routing.limit(entry, placement, pool, request(), set())
    assert placement.namespace == "b" and allowed(entry, pool, limit) == {"b"}
    assert allowed(entry, pool, inhibitor.exclude(pool, request(), limit)) == {"b"}


def test_a_request_stays_in_its_inhibited_set_when_no_other_set_is_healthy():
    entry = model({"a": (1, 1), "b": (1, 1)})
    routing = SetRouting(random.Random(0), inhibitor=draining(*decode_of(entry, "a"), *decode_of(entry, "b")))
    placement, pool = Placement("a"), entry.pool(Role.DECODE)
    assert allowed(entry, pool, routing.limit(entry, placement, pool, request(), set())) == {"a"}
    assert placement.namespace == "a"  # fail open in its own set: no move, no re-prefill
    # its own set excluded for the request (failed it): any set with a worker left, inhibited or not
    limit = routing.limit(entry, placement, pool, request(), decode_of(entry, "a"))
    assert placement.namespace == "b" and allowed(entry, pool, limit) == {"b"}


def test_a_disaggregated_models_requests_go_to_sets_with_both_roles():
    """The new generation's decode workers came up before its prefill workers: none of its requests go there
    (they would prefill locally, or get 503 under --enforce-disagg) until they do."""
    entry = model({"old": (2, 1), "new": (6, 0)})
    routing = SetRouting(random.Random(1))
    assert {routing.place(entry, request()).namespace for _ in range(200)} == {"old"}
    # no set with both roles: the decode-only sets, as before
    aggregated = model({"a": (1, 0), "b": (1, 0)})
    assert {routing.place(aggregated, request()).namespace for _ in range(200)} == {"a", "b"}
    # the only complete set drains: a healthy decode-only set serves rather than a draining one
    routing = SetRouting(random.Random(1), inhibitor=draining(*decode_of(entry, "old")))
    assert {routing.place(entry, request()).namespace for _ in range(50)} == {"new"}


def test_a_move_prefers_a_set_with_both_roles():
    entry = model({"a": (1, 1), "b": (1, 1), "c": (3, 0)})
    routing = SetRouting(random.Random(4))
    for _ in range(30):
        placement = Placement("a")
        routing.limit(entry, placement, entry.pool(Role.DECODE), request(), decode_of(entry, "a"))
        assert placement.namespace == "b"


def test_a_choice_outside_the_requests_set_is_stray():
    entry = model({"a": (1, 1), "b": (1, 1)})
    routing, pool = SetRouting(random.Random(0)), entry.pool(Role.DECODE)
    a, b = (entry.workers[min(decode_of(entry, ns))] for ns in ("a", "b"))
    placement = Placement("a")
    assert routing.stray(placement, pool, request(), b) and not routing.stray(placement, pool, request(), a)
    assert placement.strays == 0  # routed in its set: the next routing has its own retries
    assert routing.stray(placement, pool, request(), b) and routing.stray(placement, pool, request(), b)
    assert placement.strays == 2  # the caller bounds its retries
    assert not routing.stray(Placement(), pool, request(), b)  # one set when it started: nothing to keep to
    pinned = request(RoutingHints(backend_instance_id=b.instance_id))
    assert not routing.stray(Placement("a"), pool, pinned, b)  # the client chose


def test_a_request_whose_set_is_gone_moves_to_the_set_left():
    """Only set b is left: the request placed in a moves there (its transfer parameters are no good)."""
    entry = model({"a": (1, 1), "b": (1, 1)})
    placement = Placement("a")
    entry.workers = {i: w for i, w in entry.workers.items() if w.endpoint.namespace == "b"}
    entry.version += 1
    routing, pool = SetRouting(random.Random(0)), entry.pool(Role.DECODE)
    assert routing.limit(entry, placement, pool, request(), set(), probe=True) == set()
    assert placement.namespace == "a"  # a probe moves nothing
    assert routing.limit(entry, placement, pool, request(), set()) == set() and placement.namespace == "b"
    assert not routing.stray(placement, pool, request(), entry.workers[min(decode_of(entry, "b"))])


def test_a_probe_moves_nothing_and_counts_nothing():
    routing, count = counting(0)
    entry = model({"a": (1, 1), "b": (1, 1)})
    placement, pool = routing.place(entry, request()), entry.pool(Role.DECODE)
    home = placement.namespace
    limit = routing.limit(entry, placement, pool, request(), decode_of(entry, home), probe=True)
    assert placement.namespace == home and allowed(entry, pool, limit) == {"a", "b"} - {home}
    routing.limit(entry, placement, pool, request(), decode_of(entry, home))
    assert placement.namespace != home  # moved for real, but counted once, where it was placed
    assert sum(count(ns) or 0 for ns in ("a", "b")) == 1
    routing.place(entry, request(), count=False)
    assert sum(count(ns) or 0 for ns in ("a", "b")) == 1


def test_a_finished_rollout_removes_the_series():
    routing, count = counting(3)
    entry = model({"a": (1, 0), "b": (1, 0)})
    for _ in range(20):
        routing.place(entry, request())
    assert count("a") and count("b")
    entry.workers = {i: w for i, w in entry.workers.items() if w.endpoint.namespace == "b"}
    entry.version += 1
    routing.prune(entry)  # the membership-change hook: back to one set, no series left
    assert count("a") is None and count("b") is None
    # a model whose last worker left goes too
    other = model({"a": (1, 0), "b": (1, 0)})
    routing.place(other, request())
    other.workers = {}
    other.version += 1
    routing.prune(other)
    assert count("a") is None and count("b") is None and not routing._counted


def test_a_session_stays_in_its_bound_workers_set():
    entry = model({"a": (2, 1), "b": (2, 1)})
    policy = SessionAffinityPolicy(RoundRobinPolicy(), ttl_secs=60.0)
    pool = entry.pool(Role.DECODE)
    bound = min(decode_of(entry, "b"))
    policy.table.acquire((pool.name, "s1"), bound, "r0", move=False, final=False)
    assert policy.bound_worker(pool, "s1") == bound and policy.bound_worker(pool, "s2") is None
    routing = SetRouting(random.Random(0))
    session = request(RoutingHints(session_id="s1"))
    assert {routing.place(entry, session, policy).namespace for _ in range(50)} == {"b"}
    # its worker inhibited: the binding will move, so the request is drawn like any other
    routing = SetRouting(random.Random(0), inhibitor=draining(*decode_of(entry, "b")))
    assert {routing.place(entry, session, policy).namespace for _ in range(50)} == {"a"}


def test_roles_in_different_namespaces_are_said_once(caplog):
    entry = model({"dec": (2, 0), "pre": (0, 2)})
    routing = SetRouting(random.Random(0), enforce_disagg=True)
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.worker_sets"):
        for _ in range(5):
            assert routing.place(entry, request()).namespace == "dec"
        routing.prune(entry)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "'m'" in said[0] and "dec" in said[0] and "pre" in said[0] and "503" in said[0]
    # healed (a prefill worker joined the decode set), then split again: said again
    entry.workers[99] = WorkerInfo(99, EndpointId("dec", "prefill", "generate"), card(card().worker_type.PREFILL),
                                   "h:99")
    entry.version += 1
    routing.prune(entry)
    del entry.workers[99]
    entry.version += 1
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.worker_sets"):
        routing.prune(entry)
    assert len(caplog.records) == 2 and "aggregated" not in caplog.records[-1].getMessage()

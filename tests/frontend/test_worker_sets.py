"""Worker sets (`worker_sets.py`): a model's workers grouped by namespace, a request's set drawn weighted by the
set's decode workers, and the `exclude` that keeps its routing in that set; with one namespace nothing is chosen
and nothing restricted."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.worker_sets import Placement, SetRouting
from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions
from dynamo.router.policy import Role, WorkerInfo
from dynamo.runtime.records import EndpointId


def card(worker_type: WorkerType = WorkerType.DECODE) -> ModelDeploymentCard:
    return ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096,
                               kv_cache_block_size=16, worker_type=worker_type)


def model(layout: dict[str, tuple[int, int]]) -> ModelEntry:
    """`layout`: namespace -> (decode workers, prefill workers); ids numbered in order."""
    entry = ModelEntry("m", None, card())  # type: ignore[arg-type]  # no pipeline: nothing to tokenize
    iid = 0
    for ns, (decode, prefill) in layout.items():
        for kind, n in ((WorkerType.DECODE, decode), (WorkerType.PREFILL, prefill)):
            for _ in range(n):
                iid += 1
                component = "prefill" if kind is WorkerType.PREFILL else "backend"
                entry.workers[iid] = WorkerInfo(iid, EndpointId(ns, component, "generate"), card(kind), f"h:{iid}")
    return entry


def ns_of(entry: ModelEntry, iid: int) -> str:
    return entry.workers[iid].endpoint.namespace


def request(hints: RoutingHints | None = None) -> PreprocessedRequest:
    return PreprocessedRequest(request_id="r", model="m", token_ids=[1, 2, 3], stop_conditions=StopConditions(),
                               routing=hints)


def counting(seed: int) -> tuple[SetRouting, Callable[[str], float | None]]:
    """A set routing that counts its requests per set, and a set's count of model "m" (None: no series)."""
    registry = CollectorRegistry()
    counter = PromCounter("t_worker_set_requests", "", ("model", "namespace"), registry=registry)

    def count(namespace: str) -> float | None:
        return registry.get_sample_value("t_worker_set_requests_total", {"model": "m", "namespace": namespace})
    return SetRouting(random.Random(seed), counter), count


def test_workers_are_grouped_by_namespace_once_per_version():
    entry = model({"ns-old": (7, 2), "ns-new": (3, 0), "ns-pre": (0, 1)})
    sets = entry.worker_sets()
    assert entry.worker_sets() is sets  # cached while the membership is unchanged
    assert sets.namespaces == ("ns-new", "ns-old", "ns-pre") and not sets.single
    assert sets.routable == ("ns-new", "ns-old")  # prefill workers alone cannot answer a request
    assert [s["namespace"] for s in sets.report()] == ["ns-new", "ns-old", "ns-pre"]
    assert {s["namespace"]: (s["decode_workers"], s["prefill_workers"]) for s in sets.report()} == {
        "ns-old": (7, 2), "ns-new": (3, 0), "ns-pre": (0, 1)}
    entry.version += 1
    assert entry.worker_sets() is not sets


def test_a_set_is_drawn_in_proportion_to_its_decode_workers():
    """Dynamo's example: 7 and 3 workers take 70% and 30% of the requests."""
    entry = model({"old": (7, 1), "new": (3, 1)})
    routing = SetRouting(random.Random(1234))
    draws = Counter(routing.place(entry, request()).namespace for _ in range(10_000))
    assert set(draws) == {"old", "new"}
    assert abs(draws["old"] / 10_000 - 0.7) < 0.03


def test_one_namespace_restricts_nothing():
    entry = model({"only": (4, 2)})
    routing = SetRouting(random.Random(0))
    placement = routing.place(entry, request())
    assert placement.namespace is None
    exclude: set[int] = set()
    pool = entry.pool(Role.DECODE)
    assert routing.limit(entry, placement, pool, request(), exclude) is exclude  # the same set, not a copy


def test_a_requests_routing_is_kept_in_its_set_in_both_pools():
    entry = model({"a": (2, 1), "b": (2, 1)})
    placement = Placement("a")
    routing = SetRouting(random.Random(0))
    for role in (Role.DECODE, Role.PREFILL):
        pool = entry.pool(role)
        limit = routing.limit(entry, placement, pool, request(), set())
        assert {ns_of(entry, w.instance_id) for w in pool.workers if w.instance_id not in limit} == {"a"}


def test_a_set_without_a_decode_worker_left_moves_the_request():
    entry = model({"a": (2, 1), "b": (1, 1), "c": (0, 1)})
    routing = SetRouting(random.Random(0))
    placement = Placement("a")
    a_decode = {w.instance_id for w in entry.pool(Role.DECODE).workers if ns_of(entry, w.instance_id) == "a"}
    pool = entry.pool(Role.DECODE)
    assert routing.limit(entry, placement, pool, request(), {min(a_decode)}) and placement.namespace == "a"
    limit = routing.limit(entry, placement, pool, request(), set(a_decode))
    assert placement.namespace == "b"  # the only other set with a decode worker
    assert {ns_of(entry, w.instance_id) for w in pool.workers if w.instance_id not in limit} == {"b"}
    # every decode worker excluded: nothing to move to, the request's own exclude (its no-workers answer)
    everything = {w.instance_id for w in pool.workers}
    assert routing.limit(entry, placement, pool, request(), everything) == everything
    # a prefill pool never moves the request: its set has a prefill worker or it prefills locally
    prefill = entry.pool(Role.PREFILL)
    placement = Placement("a")
    routing.limit(entry, placement, prefill, request(), {w.instance_id for w in prefill.workers})
    assert placement.namespace == "a"


def test_a_pinned_worker_decides_the_set_and_is_not_restricted():
    entry = model({"a": (2, 1), "b": (2, 1)})
    b_decode = next(w.instance_id for w in entry.pool(Role.DECODE).workers if ns_of(entry, w.instance_id) == "b")
    a_prefill = next(w.instance_id for w in entry.pool(Role.PREFILL).workers if ns_of(entry, w.instance_id) == "a")
    routing = SetRouting(random.Random(0))
    pinned = request(RoutingHints(backend_instance_id=b_decode))
    assert {routing.place(entry, pinned).namespace for _ in range(50)} == {"b"}
    only_prefill = request(RoutingHints(prefill_worker_id=a_prefill))
    placement = routing.place(entry, only_prefill)
    assert placement.namespace == "a"
    assert routing.limit(entry, placement, entry.pool(Role.PREFILL), only_prefill, set()) == set()


def test_requests_are_counted_per_set_and_a_gone_sets_series_is_removed():
    routing, count = counting(3)
    entry = model({"a": (1, 0), "b": (1, 0)})
    for _ in range(40):
        routing.place(entry, request())
    a, b = count("a"), count("b")
    assert a and b and a + b == 40
    entry.workers = {i: w for i, w in entry.workers.items() if w.endpoint.namespace == "b"}
    entry.workers[9] = WorkerInfo(9, EndpointId("c", "backend", "generate"), card(), "h:9")
    entry.version += 1
    routing.place(entry, request())
    assert count("a") is None

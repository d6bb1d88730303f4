"""Worker sets: a model's served workers grouped by Dynamo namespace, and which set each request runs in.

Under NVIDIA Dynamo's operator a managed rolling update of a graph's workers (a new image, TP size, engine
flags) starts the new workers in a new hashed namespace (`<k8s-ns>-<dgd>-<hash8>`) beside the old ones, and a
frontend with `--namespace-prefix` discovers both. Generations must not mix: a new prefill worker's KV layout
may not fit an old decode worker (Dynamo's "namespace isolation"). As in Dynamo's frontend ("worker set
routing"), a request first picks a set, weighted by its worker count (here its decode workers: a set with only
prefill workers cannot answer), then a worker within it by the routing policy in effect; the weighting also keeps
the KV router from starving the new, cold-cache set.

This module owns the grouping (`WorkerSets`, one per model entry version, cached by `ModelEntry.worker_sets`)
and a request's set (`Placement`, chosen once before its prefill by `SetRouting.place`). Routing policies are not
changed: a request is kept in its set by the `exclude` set every policy takes (`SetRouting.limit`). With one
namespace (the common case) nothing is chosen and `limit` returns the request's own `exclude` as it is.
"""

from __future__ import annotations

import bisect
import itertools
import random

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.policy import Role, WorkerPool, pinned_worker


class WorkerSets:
    """A model's workers by namespace, at one membership version (both roles' pools)."""

    __slots__ = ("version", "decode", "prefill", "namespaces", "routable", "_cumulative", "_outside")

    def __init__(self, decode: WorkerPool, prefill: WorkerPool) -> None:
        self.version = decode.version
        self.decode: dict[str, tuple[int, ...]] = _by_namespace(decode)
        self.prefill: dict[str, tuple[int, ...]] = _by_namespace(prefill)
        self.namespaces = tuple(sorted(self.decode.keys() | self.prefill.keys()))
        # Only sets with a decode worker can answer; each weighted by its decode workers.
        self.routable = tuple(ns for ns in self.namespaces if ns in self.decode)
        self._cumulative = list(itertools.accumulate(len(self.decode[ns]) for ns in self.routable))
        self._outside: dict[tuple[str, Role], frozenset[int]] = {}

    @property
    def single(self) -> bool:
        """At most one namespace: nothing to choose, nothing to restrict."""
        return len(self.namespaces) <= 1

    def count(self, namespace: str, role: Role) -> int:
        return len((self.prefill if role is Role.PREFILL else self.decode).get(namespace, ()))

    def members(self, namespace: str, role: Role) -> tuple[int, ...]:
        return (self.prefill if role is Role.PREFILL else self.decode).get(namespace, ())

    def outside(self, namespace: str, role: Role) -> frozenset[int]:
        """The role's workers of every other set: what a request of `namespace` may not go to."""
        key = (namespace, role)
        ids = self._outside.get(key)
        if ids is None:
            by_ns = self.prefill if role is Role.PREFILL else self.decode
            ids = self._outside[key] = frozenset(i for ns, members in by_ns.items() if ns != namespace
                                                 for i in members)
        return ids

    def pick(self, rng: random.Random, exclude: set[int] | frozenset[int] = frozenset()) -> str | None:
        """A routable set, weighted by its decode workers; with `exclude`, only sets with a decode worker
        left outside it, weighted by those. None when no set has one."""
        if not exclude:
            if not self.routable:
                return None
            return self.routable[bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])]
        weights = [sum(1 for i in self.decode[ns] if i not in exclude) for ns in self.routable]
        if not any(weights):
            return None
        return rng.choices(self.routable, weights)[0]

    def report(self) -> list[dict]:
        """The `/health` view: each set with its workers by role."""
        return [{"namespace": ns, "decode_workers": self.count(ns, Role.DECODE),
                 "prefill_workers": self.count(ns, Role.PREFILL)} for ns in self.namespaces]


def _by_namespace(pool: WorkerPool) -> dict[str, tuple[int, ...]]:
    groups: dict[str, list[int]] = {}
    for worker in pool.workers:
        groups.setdefault(worker.endpoint.namespace, []).append(worker.instance_id)
    return {ns: tuple(ids) for ns, ids in groups.items()}


class Placement:
    """One request's worker set: chosen once, before its prefill; its prefill and decode workers both come from
    it. `namespace` None: the model had one set (or none) when the request started; `prefilled_in`: the set whose
    prefill worker made the request's transfer parameters (they are no good to another set's decode worker)."""

    __slots__ = ("namespace", "prefilled_in")

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        self.prefilled_in: str | None = None


class SetRouting:
    """Chooses each request's set (`place`), keeps its routing in it (`limit`) and moves it when its set has
    no decode worker left. Counts the requests per set in `counter` (model, namespace) while a model has several;
    the series of a set that is gone are removed, so there are only ever as many as live sets."""

    def __init__(self, rng: random.Random | None = None, counter=None) -> None:
        self.rng = rng or random.Random()
        self.counter = counter
        self._counted: dict[str, set[str]] = {}  # model -> namespaces with a series

    def place(self, entry, request: PreprocessedRequest, policy=None) -> Placement:
        """The request's set: the one its pinned worker (decode, else prefill) or its session's bound worker is
        in, else a weighted draw. One set: a placement that restricts nothing."""
        sets = entry.worker_sets()
        if sets.single:
            return Placement()
        namespace = _pinned_set(entry, request) or _session_set(entry, request, policy) or sets.pick(self.rng)
        self._count(entry.name, sets, namespace)
        return Placement(namespace)

    def limit(self, entry, placement: Placement, pool: WorkerPool, request: PreprocessedRequest,
              exclude: set[int]) -> set[int]:
        """What a policy must exclude for this request in `pool`: its own `exclude`, plus every other set's
        workers. A decode pool whose set has no worker left outside `exclude` moves the request to another set
        (weighted); a role the request pins its worker in is not restricted (the client chose)."""
        if placement.namespace is None:
            return exclude
        sets = entry.worker_sets()
        if sets.single or pinned_worker(pool, request) is not None:
            return exclude
        if pool.role is Role.DECODE and not any(i not in exclude for i in sets.members(placement.namespace,
                                                                                       Role.DECODE)):
            moved = sets.pick(self.rng, exclude)
            if moved is None:
                return exclude  # no set has a worker left: the usual no-workers answer
            placement.namespace = moved
            self._count(entry.name, sets, moved)
        return exclude | sets.outside(placement.namespace, pool.role)

    def _count(self, model: str, sets: WorkerSets, namespace: str | None) -> None:
        if self.counter is None or namespace is None:
            return
        counted = self._counted.setdefault(model, set())
        for gone in [ns for ns in counted if ns not in sets.namespaces]:
            counted.discard(gone)
            try:
                self.counter.remove(model, gone)
            except KeyError:
                pass
        counted.add(namespace)
        self.counter.labels(model, namespace).inc()


def _pinned_set(entry, request: PreprocessedRequest) -> str | None:
    if request.routing is None:
        return None
    for role in (Role.DECODE, Role.PREFILL):
        pool = entry.pool(role)
        pin = pinned_worker(pool, request)
        worker = pool.get(pin[1]) if pin is not None else None
        if worker is not None:
            return worker.endpoint.namespace
    return None


def _session_set(entry, request: PreprocessedRequest, policy) -> str | None:
    """The set of the worker the request's session is bound to (session affinity), so a rollout does not move
    a session off its cache at every request."""
    hints, table = request.routing, getattr(policy, "table", None)
    if hints is None or hints.session_id is None or table is None:
        return None
    pool = entry.pool(Role.DECODE)
    binding = table.lookup((pool.name, hints.session_id))
    worker = pool.get(binding.worker) if binding is not None else None
    return worker.endpoint.namespace if worker is not None else None

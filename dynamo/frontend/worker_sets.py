"""Worker sets: a model's served workers grouped by Dynamo namespace, and which set each request runs in.

Under NVIDIA Dynamo's operator a managed rolling update of a graph's workers (a new image, TP size, engine
flags) starts the new workers in a new hashed namespace (`<k8s-ns>-<dgd>-<hash8>`) beside the old ones, and a
frontend with `--namespace-prefix` discovers both. Generations must not mix: a new prefill worker's KV layout
may not fit an old decode worker (Dynamo's "namespace isolation"). As in Dynamo's frontend ("worker set
routing"), a request first picks a set, weighted by its worker count (here its decode workers: a set with only
prefill workers cannot answer), then a worker within it by the routing policy in effect; the weighting also keeps
the KV router from starving the new, cold-cache set. Which sets a request may be drawn into:
- while any set has both roles, only those (a new generation whose decode workers came up before its prefill
  workers would prefill locally, or answer 503 under --enforce-disagg); sets with decode workers only otherwise;
- sets with a decode worker this process does not hold inhibited (`router/inhibit.py`: a draining old generation
  answers `draining`), weighted by those; every set, as drawn, only when none has one.

This module owns the grouping (`WorkerSets`, one per model entry version, cached by `ModelEntry.worker_sets`)
and a request's set (`Placement`, chosen once before its prefill by `SetRouting.place`). Routing policies are not
changed: a request is kept in its set by the `exclude` set every policy takes (`SetRouting.limit`), and moved to
another set when every decode worker of its own is excluded or inhibited. With one namespace (the common case)
nothing is chosen and `limit` returns the request's own `exclude` as it is.

Known limitation: the routing policy keeps one router state and one queue per pool, not per set. `exclude` is
read when a request is routed; one that waits in the KV router's queue (only with busy thresholds, or
--router-queue-threshold) may be given a worker that joined another set meanwhile: callers check the choice
(`SetRouting.reroute`), free it and route again, a few times at most. A set-A request at the head of the queue
no longer holds back set-B requests behind it while A's workers are busy: the queue lets a waiter allowed a worker
not found busy go first (router_queue.py's backfill). What is left of the limitation: one router state per pool,
not per set (Dynamo's WorkerSet owns its router), so a set's KV index is the pool's.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import logging
import random
from typing import Callable, Collection

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.policy import Role, WorkerInfo, WorkerPool, pinned_worker

log = logging.getLogger(__name__)

# How many times a request's choice may land outside its set (a worker that joined another set while the request
# waited in the router's queue) before it is answered as finding no worker.
STRAY_RETRIES = 3


class Reroute(enum.Enum):
    """`SetRouting.reroute`'s word on a routed choice: what the caller does with it."""
    KEEP = "keep"  # in the request's set: go on with it
    AGAIN = "again"  # outside it, its booking freed: route the request again
    GIVE_UP = "give_up"  # outside it once too often (past STRAY_RETRIES), freed: the caller's no-worker answer


class WorkerSets:
    """A model's workers by namespace, at one membership version (both roles' pools)."""

    __slots__ = ("version", "decode", "prefill", "namespaces", "routable", "drawn", "decode_only", "prefill_only",
                 "_cumulative", "_outside")

    def __init__(self, decode: WorkerPool, prefill: WorkerPool) -> None:
        self.version = decode.version
        self.decode: dict[str, tuple[int, ...]] = _by_namespace(decode)
        self.prefill: dict[str, tuple[int, ...]] = _by_namespace(prefill)
        self.namespaces = tuple(sorted(self.decode.keys() | self.prefill.keys()))
        # Only sets with a decode worker can answer; each weighted by its decode workers.
        self.routable = tuple(ns for ns in self.namespaces if ns in self.decode)
        # The sets a request is drawn into: those with both roles while any set has both, else the routable ones.
        self.drawn = tuple(ns for ns in self.routable if ns in self.prefill) or self.routable
        self.decode_only = tuple(ns for ns in self.routable if ns not in self.prefill)
        self.prefill_only = tuple(ns for ns in self.namespaces if ns not in self.decode)
        self._cumulative = list(itertools.accumulate(len(self.decode[ns]) for ns in self.drawn))
        self._outside: dict[tuple[str, Role], frozenset[int]] = {}

    @property
    def single(self) -> bool:
        """At most one namespace: nothing to choose, nothing to restrict."""
        return len(self.namespaces) <= 1

    @property
    def split(self) -> bool:
        """A set with decode workers only beside one with prefill workers only: a model whose roles were started
        in different namespaces (--namespace-prefix outside the operator); they are never paired."""
        return bool(self.decode_only and self.prefill_only)

    def count(self, namespace: str, role: Role) -> int:
        return len(self.members(namespace, role))

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

    def pick(self, rng: random.Random, avoid: Collection[int] = frozenset()) -> str | None:
        """A set to draw a request into, weighted by its decode workers not in `avoid` (failed the request, or
        inhibited): one of `drawn` while any has such a worker, else any routable set. None when no set has."""
        if not avoid:
            if not self.drawn:
                return None
            return self.drawn[bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])]
        for among in (self.drawn, self.routable):
            weights = [sum(1 for i in self.decode[ns] if i not in avoid) for ns in among]
            if any(weights):
                return rng.choices(among, weights)[0]
        return None

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
    prefill worker made the request's transfer parameters (they are no good to another set's decode worker);
    `strays`: how many of its choices landed outside its set (`SetRouting.stray`)."""

    __slots__ = ("namespace", "prefilled_in", "strays")

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        self.prefilled_in: str | None = None
        self.strays = 0


class SetRouting:
    """Chooses each request's set (`place`), keeps its routing in it (`limit`), moves it when its set has no
    decode worker left that is neither excluded nor inhibited, and tells a choice outside it (`stray`). One per
    frontend, shared by the dispatcher and the prefill orchestrator. Counts the requests per set in `counter`
    (model, namespace) while a model has several, once each, when placed; `prune` (on every membership change)
    removes the series of sets that are gone, all of a model's once it is back to one set."""

    def __init__(self, rng: random.Random | None = None, counter=None, inhibitor=None,
                 enforce_disagg: bool = False) -> None:
        self.rng = rng or random.Random()
        self.counter = counter
        self.inhibitor = inhibitor  # router.inhibit.Inhibitor: its inhibited workers steer requests to other sets
        self.enforce_disagg = enforce_disagg  # only to say the mode in effect (`_warn_split`)
        self._counted: dict[str, set[str]] = {}  # model -> namespaces with a series
        self._split: set[str] = set()  # models warned of as split (roles in different namespaces)

    def place(self, entry, request: PreprocessedRequest, policy=None, *, count: bool = True) -> Placement:
        """The request's set: the one its pinned worker (decode, else prefill) or its session's bound worker (not
        inhibited) is in, else a weighted draw (see the module). One set: a placement that restricts nothing.
        `count` False: not counted (a routing query, whose pinned request follows)."""
        sets = entry.worker_sets()
        if sets.single:
            if self._counted and entry.name in self._counted:
                self.prune(entry)  # back to one set: no hook told us
            return Placement()
        if sets.split and entry.name not in self._split:
            self._warn_split(entry.name, sets)
        inhibited = self._inhibited()
        namespace = (_pinned_set(entry, request) or _session_set(entry, request, policy, inhibited)
                     or sets.pick(self.rng, inhibited) or sets.pick(self.rng))
        if count:
            self._count(entry.name, sets, namespace)
        return Placement(namespace)

    def limit(self, entry, placement: Placement, pool: WorkerPool, request: PreprocessedRequest,
              exclude: set[int], *, probe: bool = False) -> set[int]:
        """What a policy must exclude for this request in `pool`: its own `exclude`, plus every other set's
        workers. A decode pool whose set has no worker left outside `exclude` and the inhibited ones moves the
        request to a set that has one (else to one with a worker outside `exclude`); a role the request pins its
        worker in is not restricted (the client chose). `probe`: changes nothing (a query, a skip check); where
        the request would move, any other set's workers are allowed."""
        if placement.namespace is None:
            return exclude
        sets = entry.worker_sets()
        if sets.single:
            if not probe and sets.routable and sets.routable[0] != placement.namespace:
                placement.namespace = sets.routable[0]  # its own set is gone: moved (and prefilled again)
            return exclude
        if pinned_worker(pool, request) is not None:
            return exclude
        if pool.role is Role.DECODE:
            moved = self._destination(sets, placement.namespace, exclude, probe)
            if moved is _ANY:
                return exclude | frozenset(sets.members(placement.namespace, Role.DECODE))
            if moved is not None:
                log.debug("request %s moved from worker set %s to %s", request.request_id, placement.namespace, moved)
                placement.namespace = moved
        return exclude | sets.outside(placement.namespace, pool.role)

    def stray(self, placement: Placement, pool: WorkerPool, request: PreprocessedRequest, worker: WorkerInfo) -> bool:
        """The policy chose a worker outside the request's set (one that joined another set while the request
        waited in the router's queue; counted in `placement.strays`). Callers use `reroute`, which bounds the
        retries."""
        if placement.namespace is None or worker.endpoint.namespace == placement.namespace or \
                pinned_worker(pool, request) is not None:
            placement.strays = 0  # routed: each routing (prefill, decode, a migration's) has its own retries
            return False
        placement.strays += 1
        log.info("request %s was given worker %x of worker set %s, not of its own (%s); routing it again",
                 request.request_id, worker.instance_id, worker.endpoint.namespace, placement.namespace)
        return True

    def reroute(self, placement: Placement, pool: WorkerPool, request: PreprocessedRequest, worker: WorkerInfo,
                free: Callable[[str], object]) -> Reroute:
        """`stray`, with the bound on its retries: a stray choice's booking is freed (`free`, the routing policy's)
        and the request routed again, up to STRAY_RETRIES times; what happens past that is the caller's (the
        dispatcher answers 503, the prefill orchestrator prefills on the decode worker)."""
        if not self.stray(placement, pool, request, worker):
            return Reroute.KEEP
        free(request.request_id)  # queued while the worker joined another set: its booking is not the request's
        return Reroute.GIVE_UP if placement.strays > STRAY_RETRIES else Reroute.AGAIN

    def prune(self, entry) -> None:
        """The model's membership changed (`__main__`'s hook): remove the series of its sets that are gone (all
        of them once it has one set or none) and say once when its roles were started in different namespaces."""
        sets = entry.worker_sets()
        counted = self._counted.get(entry.name)
        if counted:
            live = set() if sets.single else set(sets.namespaces)
            for gone in counted - live:
                counted.discard(gone)
                try:
                    self.counter.remove(entry.name, gone)
                except KeyError:
                    pass
            if not counted:
                del self._counted[entry.name]
        if not sets.split:
            self._split.discard(entry.name)  # said again should it happen again
        elif entry.name not in self._split:
            self._warn_split(entry.name, sets)

    def _destination(self, sets: WorkerSets, namespace: str, exclude: set[int], probe: bool):
        """Where a decode request of `namespace` goes: None (it stays), another set, or `_ANY` (a probe of one
        that would move)."""
        members = sets.members(namespace, Role.DECODE)
        inhibited = self._inhibited()
        blocked = exclude | inhibited if inhibited else exclude
        if any(i not in blocked for i in members):
            return None
        if probe:
            return _ANY if any(i not in blocked for i in sets.outside(namespace, Role.DECODE)) or \
                not any(i not in exclude for i in members) else None
        moved = sets.pick(self.rng, blocked) if inhibited else None
        if moved is None and not any(i not in exclude for i in members):
            moved = sets.pick(self.rng, exclude)  # its own set is all excluded: any set with a worker left
        return moved  # None: no set has a worker left (the usual no-workers answer), or fail open in its own

    def _inhibited(self) -> set[int]:
        return self.inhibitor.active() if self.inhibitor is not None else set()

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

    def _warn_split(self, model: str, sets: WorkerSets) -> None:
        """Say the mode in effect for a model whose prefill and decode workers were started in different sets."""
        self._split.add(model)
        complete = [ns for ns in sets.drawn if ns in sets.prefill]
        if complete:
            mode = f"its requests go to the set(s) with both roles only ({', '.join(complete)})"
        elif self.enforce_disagg:
            mode = "its requests are answered 503 (--enforce-disagg: no set has a prefill worker of its own)"
        else:
            mode = "its requests are prefilled on their decode workers (aggregated serving)"
        log.warning("model %r: namespace(s) %s have decode workers and no prefill workers, %s prefill workers only; "
                    "a request's prefill and decode workers must share a namespace, so %s", model,
                    ", ".join(sets.decode_only), ", ".join(sets.prefill_only), mode)


_ANY = object()  # `_destination`'s answer to a probe whose request would move: any other set


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


def _session_set(entry, request: PreprocessedRequest, policy, inhibited: set[int]) -> str | None:
    """The set of the worker the request's session is bound to (session affinity), so a rollout does not move
    a session off its cache at every request; none when that worker is inhibited (the binding moves)."""
    hints = request.routing
    if hints is None or hints.session_id is None or policy is None:
        return None
    pool = entry.pool(Role.DECODE)
    bound = policy.bound_worker(pool, hints.session_id)
    worker = pool.get(bound) if bound is not None and bound not in inhibited else None
    return worker.endpoint.namespace if worker is not None else None

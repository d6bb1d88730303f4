"""Session affinity: an agent session's requests stay on the worker that holds its KV cache
(NVIDIA Dynamo's `--router-session-affinity-ttl-secs` and `--router-session-affinity-mode`).

A session is named by the request's `routing.session_id` (`x-dynamo-session-id`, or a coding
agent's own header). Its first request is routed as usual and binds the session to the chosen
worker, per pool (a model's decode pool and its prefill pool bind separately). Later requests go
to that worker:
- `hard`: always, even when it is busy (they wait in the router queue, or get 503 without one);
- `soft`: while it is not over a busy threshold; otherwise the request is routed freely and the
  binding moves with it (the session's cache is rebuilt there).
A binding lives while requests of the session are in flight and for the TTL after the last one
ends. It is dropped when its worker leaves the pool or fails a request (unreachable, stream lost,
timed out, draining), so the next request binds an available worker instead of failing; a
request marked `session_final` closes it once it ends. A child session (`parent_session_id`) is
first placed with its parent when that worker is not busy. A request that names its worker
itself (`backend_instance_id`, ...) goes there, whatever the binding.

A client may also ask for affinity itself (`nvext.session_control`, `routing.session_control`), with
or without the frontend's TTL: its `open`/`bind` action sets the binding's idle timeout (300 s by
default), `close` ends the session after that request. Without the frontend's TTL, a session named
only by a header is passive metadata, as in NVIDIA Dynamo.

Each frontend keeps its own table and tells the others of its bindings on the event plane
(`affinity_sync`, best effort); strict affinity across replicas needs the ingress to send a
session to one frontend (hash the session header).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dynamo.llm.protocol import PreprocessedRequest, RoutingHints
from dynamo.router.affinity_sync import AffinitySync
from dynamo.router.policy import Choice, PolicyHost, Role, RoutingPolicy, WorkerPool, pinned_worker
from dynamo.router.selector import BusyThresholds

log = logging.getLogger(__name__)

MAX_TTL_SECS = 31_536_000  # one year, NVIDIA Dynamo's bound
MAX_SESSIONS = 65_536  # past this many live bindings, new sessions are routed without one
CLIENT_TTL_SECS = 300.0  # a client-asked binding's idle timeout when neither the request nor the frontend sets one

SessionKey = tuple[str, str]  # (pool name, session id)


class AffinityMode(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"


@dataclass
class Binding:
    worker: int
    ttl: float  # idle seconds it outlives the session's last request
    leases: int = 0  # requests of the session in flight (bound here or not): a live binding never expires
    idle_since: float = 0.0
    closing: bool = False  # a session_final request came: gone when its last request ends


class AffinityTable:
    """Session -> worker bindings with leases and an idle TTL; the one owner of affinity state."""

    def __init__(self, ttl_secs: float | None, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_secs  # None: only sessions whose client asks for affinity are bound
        self.max_sessions = max_sessions
        self.clock = clock
        self._bindings: dict[SessionKey, Binding] = {}
        self._leases: dict[str, tuple[SessionKey, Binding]] = {}  # request id -> the binding it holds
        self.full_refusals = 0
        self.lost = 0  # bindings dropped because their worker failed or left
        self._last_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._bindings)

    def lookup(self, key: SessionKey) -> Binding | None:
        """The session's live binding; an expired one is forgotten."""
        binding = self._bindings.get(key)
        if binding is not None and self._expired(binding, self.clock()):
            del self._bindings[key]
            return None
        return binding

    def invalidate(self, key: SessionKey) -> None:
        if self._bindings.pop(key, None) is not None:
            self.lost += 1

    def acquire(self, key: SessionKey, worker: int, request_id: str, *, move: bool, final: bool,
                ttl: float | None = None) -> bool:
        """`request_id` of the session went to `worker`: bind the session there when it has no live
        binding (or `move`), and hold the binding until `release(request_id)`; `ttl` (the client's)
        replaces the binding's idle timeout. True when the session was bound anew, moved or given a new
        timeout (what router replicas are told)."""
        self.release(request_id)  # a retry of the same request holds one lease, not two
        binding = self.lookup(key)
        changed = binding is None or (move and binding.worker != worker) or (ttl is not None and ttl != binding.ttl)
        if binding is None:
            if not self._room():
                return False
            binding = self._bindings[key] = Binding(worker, self.ttl_for(ttl))
        elif move:
            binding.worker = worker
        if ttl is not None:
            binding.ttl = ttl
        binding.leases += 1
        binding.closing = binding.closing or final
        self._leases[request_id] = (key, binding)
        return changed

    def release(self, request_id: str) -> tuple[SessionKey, Binding] | None:
        """The request ended (idempotent): its binding's idle TTL starts when no request holds it.
        Returns the binding when this ended its last request (gone from the table if it closed)."""
        held = self._leases.pop(request_id, None)
        if held is None:
            return None
        key, binding = held
        binding.leases -= 1
        if binding.leases or self._bindings.get(key) is not binding:
            return None  # still in use, or invalidated meanwhile
        if binding.closing:
            del self._bindings[key]
        else:
            binding.idle_since = self.clock()
        return key, binding

    def adopt(self, key: SessionKey, worker: int, ttl: float | None = None) -> None:
        """A router replica bound the session to `worker` (for `ttl` idle seconds, when it says), or its
        request there ended: the first live binding wins; a matching one starts its idle TTL again."""
        binding = self.lookup(key)
        if binding is None and self._room():
            self._bindings[key] = Binding(worker, self.ttl_for(ttl), idle_since=self.clock())
        elif binding is not None and binding.worker == worker:
            binding.ttl = binding.ttl if ttl is None else ttl
            if not binding.leases:
                binding.idle_since = self.clock()

    def ttl_for(self, asked: float | None) -> float:
        """A binding's idle timeout: the client's, else the frontend's, else the session-control default."""
        if asked is not None:
            return asked
        return self.ttl if self.ttl is not None else CLIENT_TTL_SECS

    def close(self, key: SessionKey) -> None:
        """A replica served the session's final request: close it here too once idle."""
        binding = self.lookup(key)
        if binding is not None and binding.leases:
            binding.closing = True
        elif binding is not None:
            del self._bindings[key]

    def drop_workers(self, pool_name: str, present: set[int]) -> int:
        """Forget the pool's bindings to workers no longer in it; how many went."""
        gone = [k for k, b in self._bindings.items() if k[0] == pool_name and b.worker not in present]
        for key in gone:
            del self._bindings[key]
        self.lost += len(gone)
        return len(gone)

    def sweep(self) -> int:
        """Forget every expired binding; how many live ones are left."""
        now = self._last_sweep = self.clock()
        for key in [k for k, b in self._bindings.items() if self._expired(b, now)]:
            del self._bindings[key]
        return len(self._bindings)

    def _expired(self, binding: Binding, now: float) -> bool:
        return binding.leases == 0 and now - binding.idle_since >= binding.ttl

    def _room(self) -> bool:
        if len(self._bindings) < self.max_sessions:
            return True
        now = self.clock()
        if now - self._last_sweep >= 1.0:  # a full scan, at most once a second while the table stays full
            self.sweep()
        if len(self._bindings) < self.max_sessions:
            return True
        self.full_refusals += 1
        if self.full_refusals == 1 or self.full_refusals % 1000 == 0:
            log.warning("session affinity table full (%d live sessions): new sessions are routed without "
                        "affinity (%d so far)", len(self._bindings), self.full_refusals)
        return False


class SessionAffinityPolicy:
    """Any routing policy with session affinity around it: the binding narrows the choice to one
    worker, the wrapped policy books and answers everything else."""

    def __init__(self, inner: RoutingPolicy, ttl_secs: float | None, mode: AffinityMode | str = AffinityMode.HARD,
                 clock: Callable[[], float] = time.monotonic, max_sessions: int = MAX_SESSIONS) -> None:
        self.inner = inner
        self.mode = AffinityMode(mode)
        self.table = AffinityTable(ttl_secs, max_sessions, clock)
        self.sync: AffinitySync | None = None
        # Replicas are told of bindings once there can be any: from the start with the frontend's TTL,
        # else from the first session a client asks affinity for.
        self._sharing = ttl_secs is not None
        self._members: dict[str, set[int]] = {}  # pool name -> its workers, for what replicas tell us
        self._components: dict[str, tuple[str, str]] = {}  # pool name -> (namespace, component) to tell on
        self._joinable: set[tuple[str, str]] = set()  # every worker component seen
        self._tasks: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return self.inner.name

    async def attach(self, host: PolicyHost) -> None:
        await self.inner.attach(host)
        host.registry.register(_AffinityCollector(host.metrics_prefix, self.table))
        self.sync = AffinitySync(host.store, host.event_plane, uuid.uuid4().hex, host.instance_id, self.table,
                                 lambda pool, worker: worker in self._members.get(pool, ()))

    def on_membership_change(self, pool: WorkerPool) -> None:
        self.inner.on_membership_change(pool)
        self._members[pool.name] = {w.instance_id for w in pool.workers}
        gone = self.table.drop_workers(pool.name, self._members[pool.name])
        if gone:
            log.info("%s: %d session binding(s) dropped with their workers", pool.name, gone)
        if not pool.workers:  # a model gone (a LoRA adapter unloaded): nothing of it to keep
            del self._members[pool.name]
            self._components.pop(pool.name, None)
            return
        for eid in {(w.endpoint.namespace, w.endpoint.component) for w in pool.workers}:
            self._components.setdefault(pool.name, eid)
            self._joinable.add(eid)
            if self._sharing:
                self._join(eid)

    def _join(self, eid: tuple[str, str]) -> None:
        if self.sync is not None and not self.sync.topic.joined(*eid):
            task = asyncio.get_running_loop().create_task(self.sync.join(*eid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _share(self) -> None:
        """Hear and tell replicas' bindings from now on (the first session a client asks affinity for)."""
        self._sharing = True
        for eid in self._joinable:
            self._join(eid)

    def _tell(self, pool: str, session: str, binding: Binding, kind: str) -> None:
        component = self._components.get(pool)
        if self.sync is not None and component is not None:
            self.sync.tell(*component, pool, session, binding.worker, kind, binding.ttl)  # type: ignore[arg-type]

    def _affine(self, hints: RoutingHints | None) -> bool:
        """The request's session is bound: the frontend has a TTL, or its client asks for affinity."""
        return hints is not None and hints.session_id is not None and (
            self.table.ttl is not None or hints.session_control)

    async def select(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        hints = request.routing
        if not self._affine(hints):
            return await self.inner.select(pool, request, exclude)
        if not self._sharing:
            self._share()
        key = (pool.name, hints.session_id)
        target = self._target(pool, request, key, exclude)
        routed = request if target is None else _pinned(request, pool, target)
        choice = await self.inner.select(pool, routed, exclude)
        # Soft mode moves the binding with a request routed away from its busy worker; hard mode keeps
        # it (a differing choice is an explicit pin, or concurrent first requests: the first one bound).
        if self.table.acquire(key, choice.worker.instance_id, request.request_id, move=self.mode is AffinityMode.SOFT,
                              final=hints.session_final, ttl=hints.session_ttl_secs):
            self._tell(pool.name, hints.session_id, self.table.lookup(key), "bind")
        return choice

    async def query(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        """What `select` would choose now; binds nothing and forgets nothing."""
        hints = request.routing
        if self._affine(hints):
            target = self._target(pool, request, (pool.name, hints.session_id), exclude, forget=False)
            if target is not None:
                request = _pinned(request, pool, target)
        return await self.inner.query(pool, request, exclude)

    def _target(self, pool: WorkerPool, request: PreprocessedRequest, key: SessionKey,
                exclude: set[int], forget: bool = True) -> int | None:
        """The worker this session's request is sent to, None to let the policy choose."""
        if pinned_worker(pool, request) is not None or self.inner.name == "direct":
            return None  # the request names its worker itself
        binding = self.table.lookup(key)
        if binding is not None:
            if not _reachable(binding, pool, exclude):
                if forget:
                    self.table.invalidate(key)  # worker gone or failing: this choice binds anew
            elif self.mode is AffinityMode.HARD or not self.inner.busy(pool, binding.worker):
                return binding.worker
            else:
                return None
        parent = request.routing.parent_session_id if request.routing else None
        seed = self.table.lookup((pool.name, parent)) if parent else None
        if _reachable(seed, pool, exclude) and not self.inner.busy(pool, seed.worker):
            return seed.worker  # a subagent starts where its parent's context is cached
        return None

    def cached_tokens(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> int:
        hints = request.routing
        if not self._affine(hints):
            return self.inner.cached_tokens(pool, request, exclude)
        binding = self.table.lookup((pool.name, hints.session_id))
        if not _reachable(binding, pool, exclude):
            return self.inner.cached_tokens(pool, request, exclude)
        return self.inner.cached_tokens(pool, _pinned(request, pool, binding.worker), exclude)

    def busy(self, pool: WorkerPool, instance_id: int) -> bool:
        return self.inner.busy(pool, instance_id)

    def bound_worker(self, pool: WorkerPool, session_id: str) -> int | None:
        """The worker of `pool` the session is bound to now; None when unbound, expired or its worker left."""
        binding = self.table.lookup((pool.name, session_id))
        return binding.worker if binding is not None and pool.get(binding.worker) is not None else None

    def busy_thresholds(self, model: str) -> BusyThresholds | None:
        return self.inner.busy_thresholds(model)

    def set_busy_thresholds(self, model: str, update: BusyThresholds) -> BusyThresholds | None:
        return self.inner.set_busy_thresholds(model, update)

    def prefill_complete(self, request_id: str) -> None:
        self.inner.prefill_complete(request_id)

    def output(self, request_id: str) -> None:
        self.inner.output(request_id)

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        self.inner.free(request_id, output_tokens)
        ended = self.table.release(request_id)
        if ended is not None:  # replicas restart the idle TTL, or close the session too
            (pool, session), binding = ended
            self._tell(pool, session, binding, "close" if binding.closing else "bind")

    def health(self) -> dict:
        body = self.inner.health()
        router = dict(body.get("router", {}))
        router["session_affinity"] = {"mode": str(self.mode), "ttl_secs": self.table.ttl,
                                      "sessions": self.table.sweep(), "full_refusals": self.table.full_refusals, "lost": self.table.lost,
                                      "replica_events_applied": self.sync.applied if self.sync else 0}
        return {**body, "router": router}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sync is not None:
            await self.sync.close()
        await self.inner.close()


class _AffinityCollector:
    """The table's figures, read at scrape time: routing pays nothing for them."""

    def __init__(self, prefix: str, table: AffinityTable) -> None:
        self.prefix, self.table = prefix, table

    def describe(self):
        return []

    def collect(self):
        name = f"{self.prefix}_router_session_affinity"
        yield GaugeMetricFamily(f"{name}_sessions", "Sessions bound to a worker now", value=self.table.sweep())
        yield CounterMetricFamily(f"{name}_lost", "Session bindings dropped because their worker failed or left",
                                  value=self.table.lost)
        yield CounterMetricFamily(f"{name}_refused", "New sessions routed without a binding: the table was full",
                                  value=self.table.full_refusals)


def _reachable(binding: Binding | None, pool: WorkerPool, exclude: set[int]) -> bool:
    """The binding's worker is in the pool and not left out of this request (failed, inhibited)."""
    return binding is not None and pool.get(binding.worker) is not None and binding.worker not in exclude


def _pinned(request: PreprocessedRequest, pool: WorkerPool, worker: int) -> PreprocessedRequest:
    """The request as the policy sees it when the session's binding chooses its worker."""
    field = "prefill_worker_id" if pool.role is Role.PREFILL else "decode_worker_id"
    hints = msgspec.structs.replace(request.routing or RoutingHints(), **{field: worker})
    return msgspec.structs.replace(request, routing=hints)


def with_session_affinity(policy: RoutingPolicy, ttl_secs: float | None, mode: str) -> RoutingPolicy:
    """`policy` with session affinity around it: for every session with the frontend's TTL, else
    for the sessions whose clients ask for it (`nvext.session_control`)."""
    return SessionAffinityPolicy(policy, ttl_secs, mode)

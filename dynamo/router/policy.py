"""Routing as one component: the `WorkerPool` a policy routes over, the `RoutingPolicy`
interface with its whole lifecycle, and the registry of policies by name.

A pool is a frozen snapshot of the workers of one model in one role (decode-capable or
prefill), made by whoever discovers workers (the frontend's ModelManager, the router
service's watcher) and handed to the policy on every membership change; the policy never
keeps a second, separately maintained membership list. The same policy objects are hosted
by the frontend (`--router-mode`) and by `python -m dynamo.router`.

Lifecycle, per process: `attach(host)` -> `on_membership_change(pool)`* -> per request
`select` (books) -> `prefill_complete` (first token) -> `free` (idempotent) -> `close()`.
`query` answers what `select` would choose now and changes nothing (an inference gateway's
`query_instance_id`).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import msgspec

from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints
from dynamo.router.config import KvRouterConfig
from dynamo.router.request_metrics import RouterRequestMetrics, phase
from dynamo.router.selector import AllWorkersBusy, BusyThresholds, NoWorkers
from dynamo.runtime.records import EndpointId

__all__ = ["Role", "WorkerInfo", "WorkerPool", "Choice", "PolicyHost", "RoutingPolicy", "NoWorkers",
           "AllWorkersBusy", "register", "create_policy", "policy_names"]


class Role(enum.Enum):
    DECODE = "decode"  # answers a request end to end (aggregated or decode workers)
    PREFILL = "prefill"  # disaggregated prefill workers


class WorkerInfo:
    """One discovered worker instance. `card` is None for a worker that registered no model
    card (the router service routes to any endpoint)."""

    __slots__ = ("instance_id", "endpoint", "card", "address")

    def __init__(self, instance_id: int, endpoint: EndpointId, card: ModelDeploymentCard | None,
                 address: str | None = None) -> None:
        self.instance_id = instance_id
        self.endpoint = endpoint
        self.card = card
        self.address = address

    @property
    def publishes_kv_events(self) -> bool:
        # Card-less workers cannot say; assume they publish (the indexer then stays exact).
        return self.card is None or bool(self.card.runtime_config.publishes_kv_events)


PREFILL_POOL_SUFFIX = "/prefill"


def reserved_pool_name(model: str) -> bool:
    """A model named `X/prefill` would share routing state with model X's prefill pool."""
    return model.endswith(PREFILL_POOL_SUFFIX)


@dataclass(frozen=True)
class WorkerPool:
    """The routable workers of one model in one role, at one membership `version`."""

    model: str
    role: Role
    version: int
    block_size: int
    workers: tuple[WorkerInfo, ...] = ()
    lora_name: str | None = None  # a LoRA adapter's pool: its blocks hash in the adapter's namespace
    _by_id: dict[int, WorkerInfo] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id.update((w.instance_id, w) for w in self.workers)

    @property
    def name(self) -> str:
        """Routing-state key: the model for decode pools, `model/prefill` for prefill pools (a host
        refuses models whose own name ends so, `reserved_pool_name`)."""
        return self.model if self.role is Role.DECODE else self.model + PREFILL_POOL_SUFFIX

    def get(self, instance_id: int) -> WorkerInfo | None:
        return self._by_id.get(instance_id)

    def __len__(self) -> int:
        return len(self.workers)


@dataclass(frozen=True)
class Choice:
    """A booked routing decision: the worker, the data-parallel rank when it has several, and the
    prompt's blocks the policy found cached there (None: a load-blind policy did not look)."""

    worker: WorkerInfo
    dp_rank: int = 0
    overlap_blocks: int | None = None


@dataclass(frozen=True)
class PolicyHost:
    """What the hosting process lends a policy: discovery, request plane, metrics."""

    store: Any
    client: Any
    instance_id: int
    registry: Any
    metrics_prefix: str = "dynamo_frontend"
    event_plane: str | None = None


class RoutingPolicy(Protocol):
    name: str

    async def attach(self, host: PolicyHost) -> None: ...
    def on_membership_change(self, pool: WorkerPool) -> None: ...
    async def select(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        """Choose a worker and book the request on it; raises NoWorkers / AllWorkersBusy."""
        ...
    async def query(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        """The worker `select` would choose now, booked nowhere and never queued for (an inference
        gateway's `query_instance_id`); raises NoWorkers / AllWorkersBusy."""
        ...
    def cached_tokens(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> int:
        """Prompt tokens already cached on the worker `select` would choose now; books nothing
        (conditional disaggregation compares the uncached rest with its threshold)."""
        ...
    def busy(self, pool: WorkerPool, instance_id: int) -> bool:
        """The worker is over a busy threshold now, so `select` would pass it by (or queue for it)."""
        ...
    def busy_thresholds(self, model: str) -> BusyThresholds | None:
        """The model's busy thresholds now; None when this policy detects no busy workers."""
        ...
    def set_busy_thresholds(self, model: str, update: BusyThresholds) -> BusyThresholds | None:
        """Apply the thresholds `update` sets (not None) to the model's pools at runtime; the result,
        or None when this policy detects no busy workers."""
        ...
    def bound_worker(self, pool: WorkerPool, session_id: str) -> int | None:
        """The worker of `pool` the session is bound to now (session affinity); None when it is bound to none
        there, or this policy binds no sessions."""
        ...
    def prefill_complete(self, request_id: str) -> None: ...
    def output(self, request_id: str) -> None:
        """The request's worker sent it output now (a step of that worker's engine ended)."""
        ...
    def free(self, request_id: str, output_tokens: int = 0) -> None:
        """The request's stream on its worker ended; `output_tokens` it generated there, when the
        caller counted them (0: not counted, as for a stream that never started)."""
        ...
    def health(self) -> dict: ...
    async def close(self) -> None: ...


_REGISTRY: dict[str, Callable[[KvRouterConfig], RoutingPolicy]] = {}


def register(name: str):
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_policy(name: str, config: KvRouterConfig) -> RoutingPolicy:
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown routing policy {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None
    return factory(config)


def _load_builtin() -> None:
    # Imported for their @register side effect: "kv" (heavy, loaded on first use), then least-loaded,
    # power-of-two, direct and device-aware-weighted.
    import dynamo.router.kv_policy
    import dynamo.router.load_policies  # noqa: F401


def pinned_worker(pool: WorkerPool, request: PreprocessedRequest) -> tuple[str, int] | None:
    """(hint name, instance id) when the request names its worker in this pool: a prefill pool's by
    `prefill_worker_id`, any other's by `decode_worker_id` or else `backend_instance_id`."""
    hints = request.routing
    if hints is None:
        return None
    if pool.role is Role.PREFILL:
        pin = ("prefill_worker_id", hints.prefill_worker_id)
    elif hints.decode_worker_id is not None:
        pin = ("decode_worker_id", hints.decode_worker_id)
    else:
        pin = ("backend_instance_id", hints.backend_instance_id)
    return pin if pin[1] is not None else None


def candidates(pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> list[WorkerInfo]:
    """Workers of `pool` this request may go to (not excluded; the pinned one if pinned)."""
    pin = pinned_worker(pool, request)
    return [w for w in pool.workers if w.instance_id not in exclude and (pin is None or w.instance_id == pin[1])]


def with_dp_rank(request: PreprocessedRequest, choice: Choice) -> PreprocessedRequest:
    """The request as sent to the chosen worker: the dp rank travels in its routing hints."""
    if not choice.dp_rank:
        return request
    hints = request.routing or RoutingHints()
    return msgspec.structs.replace(request, routing=msgspec.structs.replace(hints, dp_rank=choice.dp_rank))


class CacheBlindPolicy:
    """Policies that know of no cache: nothing to watch or close. Each says which worker it would
    pick (`_pick`); `select` books it (`_book`: as they are, they book nothing, as round-robin and
    random) and counts it in Dynamo's router series, `query` only names it. The load-based ones
    (load_policies.py) book and free in-flight requests."""

    name = "stateless"
    series: RouterRequestMetrics | None = None  # Dynamo's router series, once attached to a host

    async def attach(self, host: PolicyHost) -> None:
        self.series = RouterRequestMetrics(host.registry, host.instance_id)

    def on_membership_change(self, pool: WorkerPool) -> None:
        if self.series is not None:
            for endpoint in {w.endpoint for w in pool.workers}:
                self.series.endpoint_series(endpoint)

    async def select(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        worker = self._book(pool, request, exclude)
        if self.series is not None:
            prefill = pool.role is Role.PREFILL
            self.series.routed(request.request_id, worker.endpoint, pool.model, phase(prefill, request),
                               len(request.token_ids))
        return Choice(worker)

    async def query(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> Choice:
        return Choice(self._pick(pool, request, exclude))

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        raise NotImplementedError

    def _book(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        return self._pick(pool, request, exclude)

    def _candidates(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> list[WorkerInfo]:
        workers = candidates(pool, request, exclude)
        if not workers:
            raise NoWorkers(pool.model)
        return workers

    def cached_tokens(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> int:
        return 0  # load-blind: knows of no cache

    def busy(self, pool: WorkerPool, instance_id: int) -> bool:
        return False  # no busy thresholds

    def busy_thresholds(self, model: str) -> BusyThresholds | None:
        return None

    def set_busy_thresholds(self, model: str, update: BusyThresholds) -> BusyThresholds | None:
        return None

    def bound_worker(self, pool: WorkerPool, session_id: str) -> int | None:
        return None  # binds no sessions (session_affinity.py does, around any policy)

    def prefill_complete(self, request_id: str) -> None:
        if self.series is not None:
            self.series.first_token(request_id)

    def output(self, request_id: str) -> None:
        pass

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        if self.series is not None:
            self.series.finished(request_id, output_tokens)

    def health(self) -> dict:
        return {"router": {"router_mode": self.name}}

    async def close(self) -> None:
        pass


@register("round-robin")
class RoundRobinPolicy(CacheBlindPolicy):
    name = "round-robin"

    def __init__(self, config: KvRouterConfig | None = None) -> None:
        # A turn per pool: one shared turn would pass twice per disaggregated request (its prefill and its
        # decode) or once per request of each model, so a pool could see only every other turn and send
        # all its requests to the same worker.
        self._turns: dict[str, int] = {}  # pool name (an adapter's pool is named by it)

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        """The worker whose turn it is in this pool; the turn passes only when `select` books it."""
        workers = sorted(self._candidates(pool, request, exclude), key=lambda w: w.instance_id)
        return workers[self._turns.get(pool.name, 0) % len(workers)]

    def on_membership_change(self, pool: WorkerPool) -> None:
        super().on_membership_change(pool)
        if not pool.workers:  # a model gone (a LoRA adapter unloaded): its turn goes with it
            self._turns.pop(pool.name, None)

    def _book(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        worker = self._pick(pool, request, exclude)
        self._turns[pool.name] = self._turns.get(pool.name, 0) + 1
        return worker


@register("random")
class RandomPolicy(CacheBlindPolicy):
    name = "random"

    def __init__(self, config: KvRouterConfig | None = None, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        return self._rng.choice(self._candidates(pool, request, exclude))

"""`python -m dynamo.router`: the KV router as a service, in front of the workers of one
endpoint (`--endpoint ns.component.endpoint`).

Registers under component `router` of its namespace (`DYN_NAMESPACE`, else the workers'), as NVIDIA
Dynamo 1.6's does (a global router reaches a pool's router at `<pool namespace>.router.generate`), and
under `kv-router`, the name earlier releases used, with request-plane endpoints (msgpack payloads):
- `generate`: a `PreprocessedRequest`; routes it, books its load, forwards it to the
  chosen worker and streams the worker's outputs back unchanged;
- `best_worker_id`: a `RouteQuery` -> `BestWorker` (nothing booked); or, in NVIDIA Dynamo 1.6.1's
  form, the bare token-id list -> the bare worker id;
- `get_overlap_scores`: a `RouteQuery` -> `OverlapScores` (cached prefix blocks per worker).
It is the `kv` routing policy (`dynamo.router.kv_policy`) exposed on the request plane: the
same object the frontend hosts for `--router-mode kv`, given a `WorkerPool` built from
this endpoint's instances, and the same local inhibition of failed workers
(`dynamo.router.inhibit`). Its block size is `--router-block-size` where given (NVIDIA Dynamo's
flag, default 128 there); else the workers' model cards' (`kv_cache_block_size`, as the frontend
reads it), so that hashes match the workers' without the flag, 128 until a card is seen. A worker
whose card disagrees with the rest is named in a warning. The cards also say what the pool is: prefill
workers all (a global router sends a pool's prefills here) make a prefill pool, pinned by `prefill_worker_id`
and counted as prefill in the metrics; else a decode pool. The pool is named by the endpoint, so a
`--router-policy-config` `models:` profile applies by the one model the cards name (LoRA adapters aside).

Worker streams run under the same optional deadlines as the frontend's
(`--first-token-timeout-secs`, `--stream-idle-timeout-secs`): a worker that misses one is
inhibited, its stream cancelled and the booking freed, and the caller gets a `timeout` error
naming the worker (not a retry: the caller owns that policy, as it does mid-stream).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import msgspec

from dynamo.llm.model_card import ModelDeploymentCard, WorkerType, card_decoder
from dynamo.llm.protocol import PreprocessedRequest, request_decoder
from dynamo.llm.worker_client import StreamDeadlineSettings, WorkerClient, WorkerStream
from dynamo.router.config import KvRouterConfig, check_finite, override_error
from dynamo.router.inhibit import Inhibitor, reason_for
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.kv_router import AllWorkersBusy, KvRouter, NoWorkers
from dynamo.router.pool_wait import PoolWait
from dynamo.router.service_protocol import BestWorker, BestWorkerQuery, OverlapScores, RouteQuery, encoder
from dynamo.router.selector import WorkerHintRequired
from dynamo.router.policy import PolicyHost, Role, WorkerInfo, WorkerPool, candidates, pinned_worker
from dynamo.runtime import records
from dynamo.runtime.config import setting
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.rp_client import StreamError, StreamTimeout
from dynamo.runtime.rp_server import HandlerError, RequestContext
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

ROUTER_COMPONENT = "router"
DEFAULT_BLOCK_SIZE = 128  # NVIDIA Dynamo's --router-block-size default: the block size until a model card says
EMPTY_WARNING_SECS = 30.0  # a router with no workers this long after start says where workers are instead
LEGACY_ROUTER_COMPONENT = "kv-router"


class _TokenIds(msgspec.Struct):
    """The one field of a worker's output the router reads (the rest is relayed, not decoded)."""

    token_ids: list[int] = []


_token_count_decoder = msgspec.msgpack.Decoder(_TokenIds)


@dataclass
class RouterServiceConfig(KvRouterConfig, StreamDeadlineSettings, DumpConfigTo):
    """Standalone KV router service."""

    endpoint: str | None = setting(None, "Workers to route to: namespace.component.endpoint (required)",
                                   env=("DYN_ROUTER_ENDPOINT", "DYN_ENDPOINT"))  # Dynamo's name first
    router_block_size: int | None = setting(
        None, "KV block size in tokens (default: the workers' model cards'; 128 until one is seen)",
        flag=["--router-block-size", "--block-size"])
    discovery_backend: str = discovery_backend_setting()
    event_plane: str | None = event_plane_setting()
    # As NVIDIA Dynamo: the router serves in DYN_NAMESPACE (the operator sets it to the graph's) and looks
    # for its workers there too, with DYN_NAMESPACE_WORKER_SUFFIX appended ("{namespace}-{suffix}").
    namespace: str | None = setting(None, "Namespace the router serves in (default: the --endpoint's)",
                                    env="DYN_NAMESPACE", flag=False)
    namespace_worker_suffix: str | None = setting(None, "Workers' namespace is '{namespace}-{suffix}'",
                                                  env="DYN_NAMESPACE_WORKER_SUFFIX", flag=False)
    wait_for_workers_secs: float = setting(
        0.0, "A request that finds no worker to take it (the pool scaled to zero, its only worker restarting) "
        "waits up to this long for one instead of a no_workers answer at once; held requests count in "
        "dynamo_component_router_requests_waiting_for_workers (0: off)", env="DYN_WAIT_FOR_WORKERS_SECS")

    def validate(self) -> None:
        super().validate()
        check_finite(self)  # the settings beside the router's (deadlines, the wait for workers)
        if not self.endpoint:
            raise ValueError("--endpoint ns.component.endpoint is required")
        workers = records.parse_endpoint(self.endpoint)
        self.namespace = self.namespace or workers.namespace
        namespace = f"{self.namespace}-{self.namespace_worker_suffix}" if self.namespace_worker_suffix else \
            self.namespace
        if namespace != workers.namespace:
            self.endpoint = f"{namespace}.{workers.component}.{workers.endpoint}"
        if self.router_block_size is not None and self.router_block_size < 1:
            raise ValueError("--router-block-size must be >= 1")
        if self.wait_for_workers_secs < 0:
            raise ValueError("--wait-for-workers-secs must be >= 0")
        self.check_deadlines()


class RouterService:
    def __init__(self, runtime, config: RouterServiceConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.eid = records.parse_endpoint(config.endpoint or "", runtime.namespace)
        self.policy = KvPolicy(config)
        self.inhibitor = Inhibitor(config.inhibited_duration_secs, runtime.registry, "dynamo_component")
        self.addresses: dict[int, str] = {}
        self.cards: dict[int, ModelDeploymentCard] = {}  # a worker's model card (not a LoRA adapter's, if seen)
        self._cards: dict[int, dict[str, ModelDeploymentCard]] = {}  # every card of a worker, by discovery key
        self.pool = WorkerPool(self.eid.path, Role.DECODE, 0, config.router_block_size or DEFAULT_BLOCK_SIZE)
        self.workers = WorkerClient(runtime.client, config.deadlines())
        self.pool_wait = PoolWait(config.wait_for_workers_secs, runtime.registry,
                                  (self.eid.namespace, self.eid.component, self.eid.endpoint))
        self._tasks: list[asyncio.Task] = []
        self._warned: set[int] = set()  # workers named for a block size other than the router's
        self._adopted: int | None = None  # the block size taken from the cards (no --router-block-size)
        self._role_said: Role | None = None  # the role last logged, once the cards decided one
        self._served: str | None = None  # the one model the cards name, kept while no card is seen
        self._models_warned = False  # several models behind the endpoint: `models:` profiles do not apply

    @property
    def router(self) -> KvRouter:
        """The pool's KvRouter; NoWorkers while a prefill pool has had no worker (the policy makes it no route)."""
        route = self.policy.routes.get(self.pool.name)
        if route is None:
            raise NoWorkers(self.eid.path)
        return route.router

    async def start(self) -> None:
        await self.policy.attach(PolicyHost(self.runtime.store, self.runtime.client, self.runtime.instance_id,
                                            self.runtime.registry, "dynamo_component", self.config.event_plane))
        self.policy.on_membership_change(self.pool)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch(records.INSTANCES, self._on_instance)))
        self._tasks.append(loop.create_task(self._watch(records.MDC, self._on_card)))
        self._tasks.append(loop.create_task(self._warn_if_empty(EMPTY_WARNING_SECS)))
        if self.policy.sync is not None:
            await self.policy.sync.join(self.eid.namespace, self.eid.component)
        # `generate` takes the raw payload: it decodes it to route, then forwards the caller's
        # bytes unchanged (fields this version does not know included) instead of re-encoding.
        for component in (ROUTER_COMPONENT, LEGACY_ROUTER_COMPONENT):
            for name, handler, request_type in (("generate", self.generate, None),
                                                ("best_worker_id", self.best_worker_id, BestWorkerQuery),
                                                ("get_overlap_scores", self.get_overlap_scores, RouteQuery)):
                await self.runtime.serve_endpoint(records.EndpointId(self.config.namespace or self.eid.namespace,
                                                                     component, name),
                                                  handler, request_type=request_type)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.policy.close()

    # -- workers: discovery -> pool snapshots; the policy does the rest ---------------------
    async def _watch(self, bucket: str, apply: Callable[[str, str, int, bytes | None], None]) -> None:
        async for event in self.runtime.store.watch_prefix(records.endpoint_prefix(bucket, self.eid)):
            try:
                _, iid = records.split_key(bucket, event.key)
                apply(event.kind, event.key, iid, event.value)
            except Exception as exc:  # one malformed record must not stop discovery
                log.warning("ignoring discovery record %s: %s", event.key, exc)
                continue
            self._publish_pool()

    def _on_instance(self, kind: str, key: str, iid: int, value: bytes | None) -> None:
        if kind == "delete":
            self.addresses.pop(iid, None)
        else:
            self.addresses[iid] = records.instance_decoder.decode(value or b"").address

    def _on_card(self, kind: str, key: str, iid: int, value: bytes | None) -> None:
        """A worker publishes its model's card and one per LoRA adapter it holds (`<key>/<adapter>`): it is
        routed with its model's; an adapter's stands in only while that one is unseen."""
        held = self._cards.setdefault(iid, {})
        if kind == "delete":
            held.pop(key, None)
        else:
            held[key] = card_decoder.decode(value or b"")
        if not held:
            del self._cards[iid]
            self.cards.pop(iid, None)
            return
        self.cards[iid] = min(held.values(), key=lambda card: card.lora_name is not None)

    def _publish_pool(self) -> None:
        workers = tuple(WorkerInfo(iid, self.eid, self.cards.get(iid), address)
                        for iid, address in sorted(self.addresses.items()))
        old = self.pool
        self.pool = WorkerPool(self.eid.path, self._role(), old.version + 1, self._block_size(), workers)
        if self.pool.name != old.name:  # the workers' role changed: the old role's route goes
            self.policy.retire(old.name)
        self.policy.use_profile_of(self.pool, self._model())
        self.policy.on_membership_change(self.pool)
        self.pool_wait.membership_changed()

    def _role(self) -> Role:
        """PREFILL when every worker with a card is a prefill worker (a global router sends a pool's
        prefills to its router service), else DECODE; without a card, the role decided so far."""
        types = {card.worker_type for card in self.cards.values()}
        if not types:
            return self.pool.role
        role = Role.PREFILL if types == {WorkerType.PREFILL} else Role.DECODE
        if role is not self._role_said:
            self._role_said = role
            log.info("%s: the workers' model cards say %s workers: routing them as a %s pool", self.eid.path,
                     "/".join(sorted(types)), role.value)
        return role

    def _model(self) -> str | None:
        """The model the workers serve, whose --router-policy-config `models:` profile applies (the pool is
        named by the endpoint): the one the cards name, kept while none is seen (a worker restarting); None when
        they serve several (warned of once)."""
        models = {card.display_name for card in self.cards.values() if card.lora_name is None}
        if len(models) <= 1:
            self._served = next(iter(models), self._served)
            return self._served
        self._served = None
        document = self.policy.policy_document
        if not self._models_warned and document is not None and document.models:
            self._models_warned = True
            log.warning("%s serves several models (%s): --router-policy-config's `models:` profiles do not apply "
                        "to its router; its root profile (else the flags') does", self.eid.path,
                        ", ".join(sorted(models)))
        return None

    def _block_size(self) -> int:
        """--router-block-size, else the first card's seen (kept while any card stays, so that one worker
        of another size cannot flip it); a card that disagrees is warned of once."""
        sizes = {iid: card.kv_cache_block_size for iid, card in self.cards.items() if card.kv_cache_block_size}
        if not sizes:
            self._adopted = None
        elif self._adopted is None:
            self._adopted = next(iter(sizes.values()))  # the cards in the order they were seen
        size = self.config.router_block_size or self._adopted or self.pool.block_size
        for iid, other in sizes.items():
            if other != size and iid not in self._warned:
                self._warned.add(iid)
                log.warning("worker %x's model card has KV block size %d, this router routes with %d: its cached "
                            "prefixes will not be found (set --router-block-size to the workers')", iid, other, size)
        return size

    async def _worker_came(self, request: PreprocessedRequest, exclude: set[int], ctx: RequestContext) -> bool:
        """Whether a worker the request may go to joined the pool within the wait (`pool_wait.py`)."""
        def usable() -> bool:
            return bool(candidates(self.pool, request, exclude))

        async def lagging() -> bool:  # discovery holds workers the pool has not seen yet
            found = await self.runtime.store.get_prefix(records.endpoint_prefix(records.INSTANCES, self.eid))
            return any(records.instance_id_from_key(key) not in self.addresses for key in found)

        return await self.pool_wait.until_worker(usable, lagging, ctx.is_stopped)

    async def elsewhere(self) -> str:
        """When the router has no workers: where this namespace's generate endpoints are, if anywhere (a
        `--endpoint` that names the wrong component is the usual mistake)."""
        found = await self.runtime.store.get_prefix(records.namespace_prefix(records.INSTANCES, self.eid.namespace))
        counts: dict[str, int] = {}
        for key in found:
            try:
                eid, _ = records.split_key(records.INSTANCES, key)
            except ValueError:
                continue
            if eid.endpoint == self.eid.endpoint and eid.component not in (ROUTER_COMPONENT, LEGACY_ROUTER_COMPONENT):
                counts[eid.path] = counts.get(eid.path, 0) + 1
        if not counts:
            return f"; nothing in namespace {self.eid.namespace} serves `{self.eid.endpoint}`"
        return "; workers of this namespace serve " + ", ".join(f"{p} ({n})" for p, n in sorted(counts.items())) + \
            f", not {self.eid.path}: check --endpoint"

    async def _warn_if_empty(self, after: float) -> None:
        await asyncio.sleep(after)
        if not self.addresses:
            log.warning("no workers at %s after %g s%s", self.eid.path, after, await self.elsewhere())

    # -- endpoints -----------------------------------------------------------------------
    async def best_worker_id(self, query: BestWorkerQuery, ctx: RequestContext) -> AsyncIterator[bytes]:
        """The worker `select` would pick now, nothing booked: a `BestWorker` for a `RouteQuery`, the
        bare worker id for Dynamo's bare token ids (its answer has no rank or overlap)."""
        dynamo_form = isinstance(query, list)
        if dynamo_form:
            query = RouteQuery(token_ids=query)
        if (bad := override_error(query.router_config_override)) is not None:
            raise HandlerError(bad, ErrorCode.BAD_REQUEST)
        try:
            sel = self.router.select(query.token_ids, lora_name=query.lora_name,
                                     override=query.router_config_override, cache_salt=query.cache_salt,
                                     media=query.media_salt)
        except (NoWorkers, AllWorkersBusy) as exc:
            code = ErrorCode.BUSY if isinstance(exc, AllWorkersBusy) else ErrorCode.NO_WORKERS
            raise HandlerError(str(exc), code) from None
        if dynamo_form:
            yield encoder.encode(sel.worker_id)
            return
        yield encoder.encode(BestWorker(worker_id=sel.worker_id, dp_rank=sel.dp_rank,
                                        overlap_blocks=sel.overlap_blocks))

    async def get_overlap_scores(self, query: RouteQuery, ctx: RequestContext) -> AsyncIterator[bytes]:
        if self.pool.name not in self.policy.routes:  # a prefill pool that has had no worker: nothing cached
            yield encoder.encode(OverlapScores(block_size=self.pool.block_size, scores=[]))
            return
        found = self.router.overlap_scores(query.token_ids, query.lora_name, cache_salt=query.cache_salt,
                                           media=query.media_salt)
        keys = [(w, r) for w, dp in self.router.workers().items() for r in range(dp)]
        scores = [BestWorker(worker_id=w, dp_rank=r, overlap_blocks=found.get((w, r), 0)) for w, r in keys]
        yield encoder.encode(OverlapScores(block_size=self.router.block_size, scores=scores))

    async def generate(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        try:
            request = request_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise HandlerError(f"malformed request: {exc}", ErrorCode.BAD_REQUEST) from None
        call, worker_id, first = await self._open(request, payload, ctx)
        generated = 0  # the output length and ITL the router's metrics report
        try:
            batch = first
            while batch:  # the worker's encoded outputs, relayed unchanged
                self.policy.output(request.request_id)  # a step of its worker ended now
                for item in batch:
                    generated += len(_token_count_decoder.decode(item).token_ids)
                    yield item
                batch = await call.next_payloads()
        except StreamError as exc:
            self.inhibitor.failed(worker_id, exc)
            raise _caller_error(worker_id, request.request_id, exc) from None
        finally:
            self.policy.free(request.request_id, generated)
            call.end_as(ctx)  # a caller's graceful stop stays one on the worker

    async def _open(self, request: PreprocessedRequest, payload: bytes,
                    ctx: RequestContext) -> tuple[WorkerStream, int, list[bytes]]:
        """A stream on the policy's worker and its first batch; unreachable, draining or
        disconnected workers (nothing generated yet) are skipped for the next choice, and a pool
        without a worker left is waited on (`pool_wait.py`). A worker that no longer holds the request's LoRA
        adapter is skipped too (not inhibited); once every worker refused it so, the caller gets `lora_not_loaded`
        (one left out as unreachable may still hold it: then the caller gets `no_workers`)."""
        exclude: set[int] = set()
        adapter_gone: set[int] = set()  # workers that refused the request for want of its LoRA adapter (unloaded)
        rid = request.request_id
        while True:
            try:
                choice = await self.policy.select(self.pool, request,
                                                  self.inhibitor.exclude(self.pool, request, exclude))
            except AllWorkersBusy as exc:
                raise HandlerError(f"Service temporarily unavailable: {exc}", ErrorCode.BUSY) from None
            except NoWorkers as exc:
                if adapter_gone and all(w.instance_id in adapter_gone for w in self.pool.workers):  # the caller's 404
                    raise HandlerError(f"no worker of {self.eid.path} holds the request's LoRA adapter any more",
                                       ErrorCode.LORA_NOT_LOADED) from None
                if await self._worker_came(request, exclude, ctx):
                    continue
                if (pin := pinned_worker(self.pool, request)) is not None and not exclude and \
                        self.pool.get(pin[1]) is None:  # the caller named a worker this pool lacks: its error
                    raise HandlerError(f"No worker with instance id {pin[1]} ({pin[1]:x}) serves "
                                       f"{self.eid.path} (routing hint {pin[0]})", ErrorCode.BAD_REQUEST) from None
                raise HandlerError(f"no workers available for {exc}{await self.elsewhere()}",
                                   ErrorCode.NO_WORKERS) from None
            except WorkerHintRequired as exc:
                raise HandlerError(str(exc), ErrorCode.BAD_REQUEST) from None
            worker = choice.worker
            call = None
            try:
                call = await self.workers.open(worker.address or "", self.eid.endpoint, payload,
                                               lambda: self.policy.prefill_complete(rid))
                return call, worker.instance_id, await call.next_payloads()
            except BaseException as exc:
                # Booked but not handed to `generate`'s cleanup yet: release here, whatever ended
                # it (a worker error, or the caller cancelling before the first output).
                self.policy.free(rid)
                if call is not None:
                    call.cancel()
                if not isinstance(exc, StreamError):
                    raise
                if exc.code == ErrorCode.LORA_NOT_LOADED:  # the worker is fine (not inhibited): another may hold it
                    exclude.add(worker.instance_id)
                    adapter_gone.add(worker.instance_id)
                    log.info("worker %x no longer holds the LoRA adapter of request %s; trying another",
                             worker.instance_id, rid)
                    continue
                self.inhibitor.failed(worker.instance_id, exc)
                # A missed first-output deadline is the caller's answer, not a retry: the deadline
                # is its budget for a first output (retrying would stretch its wait to a multiple
                # of it), and a slow prefill may not be a hung worker; the caller owns that policy.
                if reason_for(exc) is None or isinstance(exc, StreamTimeout):
                    raise _caller_error(worker.instance_id, rid, exc) from None
                # Unreachable, draining, or lost before its first output (a connection that died
                # idle is only found out now): nothing was sent on, so another worker may take it.
                exclude.add(worker.instance_id)
                log.warning("worker %x unreachable or draining (%s); trying another", worker.instance_id, exc)


def _caller_error(worker_id: int, request_id: str, exc: StreamError) -> HandlerError:
    """What the service's caller gets for a failed worker stream: the worker's error code
    unchanged (the caller's client raises a StreamError with it). A timeout (code `timeout`;
    the stream is already cancelled) also names the worker, since the caller cannot see which
    worker the service chose."""
    if isinstance(exc, StreamTimeout):
        log.warning("worker %x timed out on request %s: %s", worker_id, request_id, exc)
        return HandlerError(f"worker {worker_id:x} timed out: {exc}", exc.code)
    return HandlerError(str(exc), exc.code)

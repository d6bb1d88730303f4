"""The global router's request path: a request from the frontend (a `PreprocessedRequest`, as any
worker gets it) is given a pool by the plan (`pools.py`) from its length, its `nvext.router` SLA
targets and its `nvext.agent_hints.priority`, and sent, bytes unchanged, to that pool's local router
(`python -m dynamo.router`, serving `<pool namespace>.router.generate`); the router's outputs are relayed
back unchanged.

A pool whose routers cannot be reached, or whose router refuses the request (no workers, all busy),
before anything was streamed is a failed attempt: with `enable_priority_retry` the request goes on to
faster pools, else (or when none is left) the caller gets that pool's error code, so the frontend's own
policy applies (503, migration). A pool answering `lora_not_loaded` (none of its workers holds the request's LoRA
adapter) is not a failed pool: that answer goes back at once (the frontend's 404). Once output has flowed, a broken stream is the caller's to migrate.
Local routers of a pool are found in discovery and taken in turn; one that cannot be reached is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import msgspec
from prometheus_client import Counter

from dynamo.global_router.pools import PoolPlan, PoolSet
from dynamo.llm.protocol import RouterParams, request_decoder, request_encoder
from dynamo.llm.worker_client import WorkerClient, WorkerStream
from dynamo.runtime import records
from dynamo.runtime.rp_client import CannotConnect, Disconnected, StreamError
from dynamo.runtime.rp_server import HandlerError, RequestContext
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger("dynamo.global_router")

LOCAL_ROUTER = ("router", "generate")  # what a pool's `python -m dynamo.router` serves in its namespace


class _Hints(msgspec.Struct):
    priority: float | None = None
    backend_instance_id: int | None = None
    prefill_worker_id: int | None = None
    decode_worker_id: int | None = None


class _Routed(msgspec.Struct):
    """The fields of a request the pool choice reads (the rest is forwarded, not decoded)."""

    token_ids: list[int] = []
    router: RouterParams | None = None
    routing: _Hints | None = None


_routed = msgspec.msgpack.Decoder(_Routed)


class PoolRouters:
    """The local routers of every pool namespace, from discovery (owns the watch tasks)."""

    def __init__(self, store, namespaces: set[str]) -> None:
        self.store = store
        self.addresses: dict[str, dict[int, str]] = {ns: {} for ns in namespaces}
        # A turn per namespace: one shared turn passes once per pool a disaggregated request visits
        # (prefill then decode), so each pool would see every other turn and use one router only.
        self._turns: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        for ns in self.addresses:
            eid = records.EndpointId(ns, *LOCAL_ROUTER)
            found = await self.store.get_prefix(records.endpoint_prefix(records.INSTANCES, eid))
            for key, value in found.items():
                self._apply(ns, "put", key, value)
            self._tasks.append(asyncio.get_running_loop().create_task(self._watch(ns, eid)))

    async def _watch(self, ns: str, eid: records.EndpointId) -> None:
        async for event in self.store.watch_prefix(records.endpoint_prefix(records.INSTANCES, eid)):
            self._apply(ns, event.kind, event.key, event.value)

    def _apply(self, ns: str, kind: str, key: str, value: bytes | None) -> None:
        try:
            iid = records.instance_id_from_key(key)
            if kind == "delete":
                self.addresses[ns].pop(iid, None)
            else:
                self.addresses[ns][iid] = records.instance_decoder.decode(value or b"").address
        except Exception as exc:  # one malformed record must not stop discovery
            log.warning("ignoring discovery record %s: %s", key, exc)

    async def unready(self) -> list[str]:
        """Pool namespaces without a local router, or without a worker's model card, yet."""
        missing = []
        for ns, routers in self.addresses.items():
            if not routers or not await self.store.get_prefix(records.namespace_prefix(records.MDC, ns)):
                missing.append(ns)
        return missing

    async def wait_ready(self, timeout: float, poll: float = 0.5) -> list[str]:
        """Wait up to `timeout` s until every pool has a router and a worker; the pools still missing."""
        deadline = asyncio.get_running_loop().time() + timeout
        missing = await self.unready()
        while missing and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(poll)
            missing = await self.unready()
        return missing

    def in_turn(self, ns: str) -> list[str]:
        """The pool's router addresses, starting with the next one in turn."""
        found = sorted(self.addresses.get(ns, {}).values())
        if not found:
            return []
        turn = self._turns.get(ns, 0)
        self._turns[ns] = turn + 1
        start = turn % len(found)
        return found[start:] + found[:start]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class GlobalRouter:
    def __init__(self, plan: PoolPlan, routers: PoolRouters, client: WorkerClient, registry,
                 default_ttft_ms: float | None = None, default_itl_ms: float | None = None) -> None:
        self.plan, self.routers, self.client = plan, routers, client
        self.default_ttft_ms, self.default_itl_ms = default_ttft_ms, default_itl_ms
        self.routed = Counter("dynamo_global_router_requests", "Requests sent to a pool (the one that answered)",
                              ["type", "pool_namespace"], registry=registry)
        self.retried = Counter("dynamo_global_router_retries", "Pool attempts that failed before any output",
                               ["type", "pool_namespace"], registry=registry)
        self.faces: set[int] = set()  # the instance ids this router serves under (set once it serves)

    def choose(self, role: str, payload: bytes) -> tuple[PoolSet, int, bytes]:
        """The role's pools, the pool index the plan gives this request, and the bytes to send it."""
        try:
            req = _routed.decode(payload)
        except msgspec.DecodeError as exc:
            raise HandlerError(f"malformed request: {exc}", ErrorCode.BAD_REQUEST) from None
        pools, pool = self._pool(role, req)
        return pools, pool, self._unpinned(req, payload)

    def _unpinned(self, req: _Routed, payload: bytes) -> bytes:
        """`payload` without the worker pins that name one of this router's faces, else unchanged. A frontend pins
        a request to the worker it saw, which is this router (a reasoning budget's continuation, a client's own
        pin): a pool's router knows only its own workers and refuses that id."""
        hints = req.routing
        pins = ("backend_instance_id", "prefill_worker_id", "decode_worker_id")
        if hints is None or not any(getattr(hints, pin) in self.faces for pin in pins):
            return payload
        request = request_decoder.decode(payload)
        dropped = {pin: None for pin in pins if getattr(hints, pin) in self.faces}
        # a data-parallel rank goes with its pin: it was the face's, not a pool worker's
        dropped.update({"prefill_dp_rank": None} if "prefill_worker_id" in dropped else {})
        dropped.update({"dp_rank": None} if dropped.keys() & {"backend_instance_id", "decode_worker_id"} else {})
        routing = msgspec.structs.replace(request.routing, **dropped)
        return request_encoder.encode(msgspec.structs.replace(request, routing=routing))

    def _pool(self, role: str, req: _Routed) -> tuple[PoolSet, int]:
        """The role's pools and the pool index the plan gives this request."""
        targets = req.router or RouterParams()
        ttft = targets.ttft_target if targets.ttft_target is not None else self.default_ttft_ms
        itl = targets.itl_target if targets.itl_target is not None else self.default_itl_ms
        length = len(req.token_ids)
        values = {"isl": length, "context_length": length, "ttft": ttft, "itl": itl}
        pools = self.plan.pools[role]
        pool = pools.select(values, req.routing.priority if req.routing else None)
        log.debug("%s request: %d tokens, TTFT target %s ms, ITL target %s ms -> pool %d (%s)", role, length, ttft,
                  itl, pool, pools.namespaces[pool])
        return pools, pool

    async def handle(self, role: str, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        pools, pool, payload = self.choose(role, payload)
        failure: StreamError | None = None
        for index in pools.retry_order(pool, self.plan.retry):
            ns = pools.namespaces[index]
            try:
                call, first = await self._open(ns, payload)
            except StreamError as exc:
                if exc.code == ErrorCode.LORA_NOT_LOADED:  # no worker of the pool holds the adapter: the answer,
                    raise HandlerError(f"{role} pool {ns}: {exc}", exc.code) from None  # not a failing pool
                failure = exc
                self.retried.labels(role, ns).inc()
                log.warning("%s pool %d (%s) failed before any output: %s", role, index, ns, exc)
                continue
            self.routed.labels(role, ns).inc()
            async for item in _relay(call, first, ns, ctx):
                yield item
            return
        assert failure is not None
        # A pool whose routers cannot be reached is a pool without workers to the caller (503, retry later);
        # a router's own answer (no workers, busy, a bad request) goes back as it came.
        code = ErrorCode.NO_WORKERS if isinstance(failure, (CannotConnect, Disconnected)) else failure.code
        raise HandlerError(f"{role} pool {pools.namespaces[pool]}: {failure}", code)

    async def _open(self, ns: str, payload: bytes) -> tuple[WorkerStream, list[bytes]]:
        """A stream on one of the pool's routers and its first batch; a router that cannot be reached
        (or went away before answering) is skipped for the next."""
        addresses = self.routers.in_turn(ns)
        if not addresses:
            raise StreamError(f"no router serves {ns}.{'.'.join(LOCAL_ROUTER)}", ErrorCode.NO_WORKERS)
        for i, address in enumerate(addresses):
            call = None
            try:
                call = await self.client.open(address, LOCAL_ROUTER[1], payload)
                return call, await call.next_payloads()
            except BaseException as exc:
                if call is not None:
                    call.cancel()
                if not isinstance(exc, (CannotConnect, Disconnected)) or i == len(addresses) - 1:
                    raise
                log.warning("router %s of %s unreachable (%s); trying another", address, ns, exc)
        raise AssertionError("unreachable")


async def _relay(call: WorkerStream, first: list[bytes], ns: str, ctx: RequestContext) -> AsyncIterator[bytes]:
    """The pool router's outputs, unchanged; a stream broken after output is the caller's to migrate, and one
    the caller stopped gracefully (a stop string matched) is stopped the same way downstream."""
    try:
        batch = first
        while batch:
            for item in batch:
                yield item
            batch = await call.next_payloads()
    except StreamError as exc:
        # A pool's worker (or router) lost mid-stream: the caller migrates the request, through this
        # global router, which is healthy; `lost_downstream` says so (`disconnected` would leave us out).
        code = ErrorCode.LOST_DOWNSTREAM if isinstance(exc, Disconnected) else exc.code
        raise HandlerError(f"pool {ns}: {exc}", code) from None
    finally:
        call.end_as(ctx)

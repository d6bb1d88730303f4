"""`python -m dynamo.router`: the KV router as a service, in front of the workers of one
endpoint (`--endpoint ns.component.endpoint`).

Registers under component `kv-router` of the workers' namespace with request-plane
endpoints (msgpack payloads):
- `generate`: a `PreprocessedRequest`; routes it, books its load, forwards it to the
  chosen worker and streams the worker's outputs back unchanged;
- `best_worker_id`: a `RouteQuery` -> `BestWorker` (nothing booked);
- `get_overlap_scores`: a `RouteQuery` -> `OverlapScores` (cached prefix blocks per worker).
Same KvRouter, event-plane feeds and replica sync as the frontend's `--router-mode kv`.
Like NVIDIA Dynamo's, it takes its block size from `--router-block-size`, not model cards.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import msgspec

from dynamo.llm.model_card import ModelDeploymentCard, card_decoder
from dynamo.llm.protocol import request_decoder
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_router import AllWorkersBusy, KvRouter, NoWorkers
from dynamo.router.metrics import RouterMetrics
from dynamo.router.replica_sync import ReplicaSync
from dynamo.router.subscriber import KvEventFeeds, apply_mode, effective_mode
from dynamo.runtime import records
from dynamo.runtime.config import setting
from dynamo.runtime.rp_client import CannotConnect, StreamError
from dynamo.runtime.rp_server import HandlerError, RequestContext

log = logging.getLogger(__name__)

ROUTER_COMPONENT = "kv-router"


@dataclass
class RouterServiceConfig(KvRouterConfig):
    """Standalone KV router service."""

    endpoint: str | None = setting(None, "Workers to route to: namespace.component.endpoint (required)")
    router_block_size: int = setting(128, "KV block size in tokens (not read from model cards)",
                                     flag=["--router-block-size", "--block-size"])
    discovery_backend: str = setting("file", "Discovery backend", choices=["file", "etcd", "mem", "kubernetes"])
    event_plane: str | None = setting(None, "Event plane (default: zmq, or nats when NATS_SERVER is set with "
                                            "etcd)", choices=["zmq", "nats"])

    def validate(self) -> None:
        super().validate()
        if not self.endpoint:
            raise ValueError("--endpoint ns.component.endpoint is required")
        records.parse_endpoint(self.endpoint)
        if self.router_block_size < 1:
            raise ValueError("--router-block-size must be >= 1")


class RouteQuery(msgspec.Struct, kw_only=True, omit_defaults=True):
    token_ids: list[int]
    lora_name: str | None = None
    router_config_override: dict[str, float] | None = None


class BestWorker(msgspec.Struct, kw_only=True):
    worker_id: int
    dp_rank: int
    overlap_blocks: int


class OverlapScores(msgspec.Struct, kw_only=True):
    block_size: int
    scores: list[BestWorker]  # every known (worker, dp_rank), 0 when nothing matches


encoder = msgspec.msgpack.Encoder()
query_decoder = msgspec.msgpack.Decoder(RouteQuery)


class RouterService:
    def __init__(self, runtime, config: RouterServiceConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.eid = records.parse_endpoint(config.endpoint or "", runtime.namespace)
        self.router = KvRouter(config.router_block_size, config)
        self.feeds = KvEventFeeds(runtime.store, runtime.client, config.event_plane)
        self.sync = (ReplicaSync(runtime.store, config.event_plane, uuid.uuid4().hex, runtime.instance_id,
                                 lambda _model: self.router) if config.router_replica_sync else None)
        self.addresses: dict[int, str] = {}
        self.cards: dict[int, ModelDeploymentCard] = {}
        self.mode, self.reason = "", ""
        self._tracked: dict[int, str] = {}
        self.metrics = RouterMetrics.attach(runtime.registry, "dynamo_component", self._rows, lambda: dict(self.feeds.counts))
        self._tasks: list[asyncio.Task] = []

    def _rows(self):
        return [(self.eid.path, self.router, self.mode)]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch(records.INSTANCES, self._on_instance)))
        self._tasks.append(loop.create_task(self._watch(records.MDC, self._on_card)))
        if self.sync is not None:
            await self.sync.join(self.eid.namespace, self.eid.component)
        for name, handler in (("generate", self.generate), ("best_worker_id", self.best_worker_id),
                              ("get_overlap_scores", self.get_overlap_scores)):
            await self.runtime.serve_endpoint(records.EndpointId(self.eid.namespace, ROUTER_COMPONENT, name), handler)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.feeds.close()
        if self.sync is not None:
            await self.sync.close()

    # -- workers -------------------------------------------------------------------------
    async def _watch(self, bucket: str, apply: Callable[[str, int, bytes | None], None]) -> None:
        async for event in self.runtime.store.watch_prefix(records.endpoint_prefix(bucket, self.eid)):
            try:
                _, iid = records.split_key(bucket, event.key)
                apply(event.kind, iid, event.value)
            except Exception as exc:  # one malformed record must not stop discovery
                log.warning("ignoring discovery record %s: %s", event.key, exc)
                continue
            self._reconcile()

    def _on_instance(self, kind: str, iid: int, value: bytes | None) -> None:
        if kind == "delete":
            self.addresses.pop(iid, None)
        else:
            self.addresses[iid] = records.instance_decoder.decode(value or b"").address

    def _on_card(self, kind: str, iid: int, value: bytes | None) -> None:
        if kind == "delete":
            self.cards.pop(iid, None)
        else:
            self.cards[iid] = card_decoder.decode(value or b"")

    def _reconcile(self) -> None:
        known = self.router.workers()
        for iid in [i for i in known if i not in self.addresses]:
            self.router.remove_worker(iid)
            self.feeds.untrack(iid)
            self._tracked.pop(iid, None)
            log.info("worker %x left", iid)
        for iid, address in self.addresses.items():
            card = self.cards.get(iid)
            rc = card.runtime_config if card else None
            if iid not in known:
                self.router.add_worker(iid, max(rc.data_parallel_size, 1) if rc else 1,
                                       rc.total_kv_blocks if rc else None, rc.max_num_batched_tokens if rc else None)
                log.info("worker %x joined at %s", iid, address)
            if self.config.mode != "load-only" and self._tracked.get(iid) != address:
                self._tracked[iid] = address
                resync = bool(rc.enable_local_indexer) if rc else True
                task = asyncio.get_running_loop().create_task(
                    self.feeds.track(self.eid.namespace, self.eid.component, iid, self.router, address, resync))
                self._tasks.append(task)
        # Workers without a card (not an LLM worker) are assumed to publish events.
        publishing = sum(1 for i in self.addresses if i not in self.cards
                         or self.cards[i].runtime_config.publishes_kv_events)
        if self.addresses or not self.mode:
            mode, reason = effective_mode(self.config.mode, publishing, len(self.addresses))
            apply_mode(self.router, mode)
            if (mode, reason) != (self.mode, self.reason):
                level = logging.WARNING if mode == "approximate" and self.config.mode == "events" else logging.INFO
                log.log(level, "routing mode %s (%s)", mode, reason)
            self.mode, self.reason = mode, reason

    # -- endpoints -----------------------------------------------------------------------
    async def best_worker_id(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        query = _decode_query(payload)
        try:
            sel = self.router.select(query.token_ids, lora_name=query.lora_name,
                                     override=query.router_config_override)
        except (NoWorkers, AllWorkersBusy) as exc:
            raise HandlerError(str(exc), "busy" if isinstance(exc, AllWorkersBusy) else "no_workers") from None
        yield encoder.encode(BestWorker(worker_id=sel.worker_id, dp_rank=sel.dp_rank,
                                        overlap_blocks=sel.overlap_blocks))

    async def get_overlap_scores(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        query = _decode_query(payload)
        found = self.router.overlap_scores(query.token_ids, query.lora_name)
        keys = [(w, r) for w, dp in self.router.workers().items() for r in range(dp)]
        scores = [BestWorker(worker_id=w, dp_rank=r, overlap_blocks=found.get((w, r), 0)) for w, r in keys]
        yield encoder.encode(OverlapScores(block_size=self.router.block_size, scores=scores))

    async def generate(self, payload: bytes, ctx: RequestContext) -> AsyncIterator[bytes]:
        try:
            request = request_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise HandlerError(f"malformed request: {exc}", "bad_request") from None
        rid = request.request_id
        exclude: set[int] = set()
        while True:
            allowed = [i for i in self.addresses if i not in exclude]
            pinned = request.routing.backend_instance_id if request.routing else None
            if pinned is not None:
                allowed = [i for i in allowed if i == pinned]
            try:
                sel = self.router.select(request.token_ids, request_id=rid, allowed=allowed)
            except AllWorkersBusy as exc:
                raise HandlerError(f"Service temporarily unavailable: {exc}", "busy") from None
            except NoWorkers as exc:
                raise HandlerError(str(exc), "no_workers") from None
            seq = self.router.add_request(rid, sel, request.token_ids)
            self._share(rid, "add", worker_id=sel.worker_id, dp_rank=sel.dp_rank, seq_hashes=seq,
                        isl=len(request.token_ids), overlap_blocks=sel.overlap_blocks)
            try:
                stream = await self.runtime.client.open_stream(self.addresses[sel.worker_id], self.eid.endpoint,
                                                               payload)
            except (CannotConnect, KeyError) as exc:
                self._free(rid)
                exclude.add(sel.worker_id)
                log.warning("worker %x unreachable (%s); trying another", sel.worker_id, exc)
                continue
            break
        try:
            first = True
            while True:
                batch = await stream.next_batch()
                if not batch:
                    return
                if first:
                    first = False
                    if self.router.mark_prefill_complete(rid):
                        self._share(rid, "prefill")
                for item in batch:
                    yield item
        except StreamError as exc:
            raise HandlerError(str(exc), exc.code) from None
        finally:
            self._free(rid)
            if not stream.done:
                stream.cancel()

    def _free(self, rid: str) -> None:
        if self.router.free(rid):
            self._share(rid, "free")

    def _share(self, rid: str, kind: str, **fields) -> None:
        if self.sync is not None:
            self.sync.publish(self.eid.namespace, self.eid.component,
                              self.sync.event(self.eid.path, rid, kind, **fields))


def _decode_query(payload: bytes) -> RouteQuery:
    try:
        return query_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise HandlerError(f"malformed query: {exc}", "bad_request") from None

"""Disaggregated prefill/decode, orchestrated by the frontend.

When prefill workers serve a model, a request first goes to a prefill worker (the same
routing policy, over the model's prefill pool) with `prefill_only` and `max_tokens=1`; the transfer
parameters it returns (`disaggregated_params`, backend-specific: vLLM's
`kv_transfer_params`, the mocker's simulated transfer) travel with the request to a
decode worker, which pulls the KV cache and streams the answer. The client sees one
ordinary stream.

A prefill worker that cannot be reached, is draining or drops the stream is inhibited and the
request's prefill goes to another prefill worker (each tried once); one that misses a deadline
is inhibited, and the request falls back as below (the prompt may be what is slow).
Fallbacks: no prefill worker, a failed prefill (an engine error, or every prefill worker failed), or (conditional disaggregation) a short
uncached prompt (the prompt less the prefix cached on the decode worker the routing
policy would pick) or a saturated prefill pool all mean the decode worker prefills locally,
unless `--enforce-disagg`, which answers 503 instead.

Where a model's workers span several namespaces (`worker_sets.py`), a request is prefilled only by a prefill worker
of its own set (the decode worker's): a set without prefill workers is as a model without them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram

from dynamo.frontend import errors
from dynamo.frontend.dispatch import choose, refuse_worker_card
from dynamo.frontend.errors import ApiError
from dynamo.frontend.stage_metrics import PREFILL, StageMetrics
from dynamo.frontend.worker_sets import Placement, Reroute, SetRouting
from dynamo.llm.protocol import PreprocessedRequest
from dynamo.llm.worker_client import NO_DEADLINES, Deadlines, WorkerClient
from dynamo.router.inhibit import Inhibitor, reason_for
from dynamo.router.policy import Role, RoutingPolicy, WorkerPool, with_dp_rank
from dynamo.runtime.rp_client import FellBehind, RequestPlaneClient, StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

# Why the decode worker prefills a request itself: the `reason` label of `local_prefills` and the
# detail of the 503 under --enforce-disagg, so these values are part of the metrics' contract.
NO_PREFILL_WORKERS = "no_prefill_workers"
SHORT_PROMPT = "short_prompt"
CACHED_PREFIX = "cached_prefix"
PREFILL_POOL_BUSY = "prefill_pool_busy"
PREFILL_FAILED = "prefill_failed"
ADAPTER_NOT_ON_PREFILL = "lora_not_loaded"  # no prefill worker holds the request's LoRA adapter (any more)
NO_TRANSFER_PARAMS = "no_transfer_params"
# conditional disaggregation's own choices, not fallbacks (they do not count as decode-only)
POLICY_REASONS = frozenset({SHORT_PROMPT, CACHED_PREFIX})


class DisaggPolicy(msgspec.Struct, kw_only=True):
    enforce: bool = False
    conditional: bool = False
    # Conditional disaggregation: prefill locally when fewer uncached prompt tokens than this...
    eff_isl_threshold: int = 2048
    # ...or when every prefill worker already has this many prefills in flight (0: no limit).
    max_inflight_prefills_per_worker: int = 0

    @classmethod
    def from_config(cls, enforce: bool, conditional: bool, raw: dict[str, Any] | None) -> "DisaggPolicy":
        policy = msgspec.convert({**(raw or {}), "enforce": enforce, "conditional": conditional}, cls)
        if policy.eff_isl_threshold < 0 or policy.max_inflight_prefills_per_worker < 0:
            raise ValueError("conditional disaggregation thresholds must be >= 0")
        return policy


class DisaggMetrics:
    def __init__(self, registry, prefix: str) -> None:
        self.remote = Counter(f"{prefix}_remote_prefills", "Requests prefilled on a prefill worker", ("model",),
                              registry=registry)
        self.local = Counter(f"{prefix}_local_prefills", "Requests prefilled on the decode worker although "
                             "prefill workers exist", ("model", "reason"), registry=registry)
        self.kv_bytes = Counter(f"{prefix}_kv_transfer_bytes", "KV cache bytes moved prefill -> decode",
                                ("model", "transport"), registry=registry)
        self.transfer = Histogram(f"{prefix}_kv_transfer_seconds", "KV transfer time reported by the backend",
                                  ("model", "transport"), registry=registry,
                                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.prefill = Histogram(f"{prefix}_remote_prefill_seconds", "Remote prefill round trip", ("model",),
                                 registry=registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        # Dynamo's: a disaggregated model's request served decode-only because its prefill could not run
        # remotely (its prefill workers gone, failed, busy), not because the policy chose so.
        self.decode_only = Counter(f"{prefix}_model_decode_only_fallback", "Requests of a disaggregated model "
                                   "served decode-only because no prefill worker could prefill them", ("model",),
                                   registry=registry)


# `_prefill_on`'s answer when the request should be prefilled on another prefill worker.
_ANOTHER_WORKER = object()
# Its answer when the prefill worker no longer holds the request's LoRA adapter: another is tried the same way, and
# once every prefill worker said so the adapter is gone (404), not a failed prefill.
_ADAPTER_GONE = object()


class PrefillOrchestrator:
    def __init__(self, client: RequestPlaneClient, routing: RoutingPolicy, policy: DisaggPolicy,
                 metrics: DisaggMetrics, deadlines: Deadlines = NO_DEADLINES,
                 stages: StageMetrics | None = None, inhibitor: Inhibitor | None = None,
                 sets: SetRouting | None = None) -> None:
        # The frontend's deadlines apply here too: a prefill worker that hangs past them costs a
        # local prefill (or 503 with --enforce-disagg), not a request that never ends.
        self.workers = WorkerClient(client, deadlines)
        self.routing = routing
        self.policy = policy
        self.metrics = metrics
        self.stages = stages or StageMetrics("dynamo_frontend", CollectorRegistry())
        # The frontend's: a prefill worker that failed is left out of routing for a while, as a decode one is.
        self.inhibitor = inhibitor or Inhibitor(0)
        self.inflight: dict[int, int] = {}
        self.disaggregated: set[str] = set()  # models that have had prefill workers
        self.sets = sets or SetRouting(inhibitor=self.inhibitor)  # the dispatcher's too (`__main__`)

    def _skip_reason(self, entry, pool: WorkerPool, request: PreprocessedRequest,
                     placement: Placement | None = None) -> str | None:
        """Why the decode worker prefills this request itself, or None when a prefill worker should."""
        return self._skip(entry, pool, request, placement or Placement())[0]

    def _skip(self, entry, pool: WorkerPool, request: PreprocessedRequest,
              placement: Placement) -> tuple[str | None, set[int]]:
        """`_skip_reason`'s answer, with the prefill workers the request's set may not use (a probe: `query`
        routes by it too)."""
        limit = self.sets.limit(entry, placement, pool, request, set(), probe=True)
        workers = [w for w in pool.workers if w.instance_id not in limit] if limit else pool.workers
        if not workers:
            return NO_PREFILL_WORKERS, limit
        if not self.policy.conditional:
            return None, limit
        return self._conditional_skip(entry, workers, request, placement), limit

    def _conditional_skip(self, entry, workers: list, request: PreprocessedRequest,
                          placement: Placement) -> str | None:
        """Conditional disaggregation's reason to prefill on the decode worker, among `workers` (the set's)."""
        threshold = self.policy.eff_isl_threshold
        if len(request.token_ids) < threshold:
            return SHORT_PROMPT
        # Dynamo's effective ISL: the prompt less the prefix already cached on the decode worker
        # the request would go to; that worker prefills only the rest.
        decode = entry.pool(Role.DECODE)
        cached = self.routing.cached_tokens(decode, request,
                                            self.sets.limit(entry, placement, decode, request, set(), probe=True))
        if len(request.token_ids) - cached < threshold:
            return CACHED_PREFIX
        busy_at = self.policy.max_inflight_prefills_per_worker
        if busy_at and all(self.inflight.get(w.instance_id, 0) >= busy_at for w in workers):
            return PREFILL_POOL_BUSY
        return None

    async def query(self, entry, request: PreprocessedRequest, placement: Placement | None = None,
                    card: str = "") -> int | None:
        """The prefill worker `prefill` would send this request to now (of its set, `placement`), booked nowhere;
        None when the decode worker would prefill it (see `_skip_reason`). CardChanged when that worker is of
        another card than `card`, the one the request was prepared for."""
        placement = placement or Placement()
        pool = entry.pool(Role.PREFILL)
        reason, limit = self._skip(entry, pool, request, placement)
        if reason is not None:
            return None
        worker = (await choose(self.routing, pool, request, limit, book=False)).worker
        refuse_worker_card(entry, worker, card)
        return worker.instance_id

    async def prefill(self, entry, request: PreprocessedRequest, handle, card: str,
                      placement: Placement | None = None) -> dict[str, Any] | None:
        """Transfer parameters for the decode worker, or None to prefill locally. `card`: the checksum of the card
        the request was prepared for: a prefill pool of another card (a switch while the request waited to be
        routed) raises CardChanged, as the decode side does (`dispatch.py`). `placement`: the request's worker
        set; only its prefill workers may take it."""
        placement = placement or Placement()
        pool = entry.pool(Role.PREFILL)
        reason = self._skip_reason(entry, pool, request, placement)
        if pool.workers:
            self.disaggregated.add(entry.name)
        if reason is not None:
            if reason == NO_PREFILL_WORKERS and not self.policy.enforce:
                if entry.name in self.disaggregated:  # its prefill workers are gone: decode-only now
                    self.metrics.decode_only.labels(entry.name).inc()
                return None  # plain aggregated serving: nothing to report
            return self._local(entry, reason)
        sub = msgspec.structs.replace(
            request, request_id=request.request_id + ":prefill", prefill_only=True,
            stop_conditions=msgspec.structs.replace(request.stop_conditions, max_tokens=1, min_tokens=None))
        exclude: set[int] = set()  # prefill workers that failed this request: never tried twice
        adapter_gone: set[int] = set()  # of them, those that no longer hold its LoRA adapter
        while True:
            pool = entry.pool(Role.PREFILL)  # now: an older snapshot would undo membership changes since
            limit = self.sets.limit(entry, placement, pool, sub, exclude)  # never another set's prefill worker
            try:
                with self.stages.stage("route", PREFILL):
                    choice = await handle.routed(
                        choose(self.routing, pool, sub, self.inhibitor.exclude(pool, sub, limit)))
            except ApiError as exc:  # every prefill worker busy, or all of them failed this request
                if exc.code == "worker_not_found":  # the client pinned a worker that is no prefill worker here
                    raise
                if exclude and exclude <= adapter_gone:  # none holds the adapter any more: gone, not a failure
                    if self.policy.enforce:
                        raise errors.model_not_found(entry.name) from None
                    # the decode worker prefills: it answers lora_not_loaded itself if it lacks the adapter too
                    return self._local(entry, ADAPTER_NOT_ON_PREFILL)
                return self._local(entry, PREFILL_FAILED if exclude else PREFILL_POOL_BUSY)
            if choice is None:
                return None  # the client left while the prefill waited to be routed
            reroute = self.sets.reroute(placement, pool, sub, choice.worker, self.routing.free)
            if reroute is Reroute.GIVE_UP:
                return self._local(entry, NO_PREFILL_WORKERS)
            if reroute is Reroute.AGAIN:
                continue
            try:
                refuse_worker_card(entry, choice.worker, card)  # the model switched its card meanwhile
            except errors.CardChanged:
                self.routing.free(sub.request_id)
                raise
            outcome = await self._prefill_on(entry, choice, sub, handle)
            if outcome is _ADAPTER_GONE:
                adapter_gone.add(choice.worker.instance_id)
            elif outcome is not _ANOTHER_WORKER:
                if outcome is not None:  # its parameters are for this worker's set: the decode keeps to it
                    placement.prefilled_in = choice.worker.endpoint.namespace
                    placement.namespace = placement.namespace or placement.prefilled_in
                return outcome
            exclude.add(choice.worker.instance_id)

    async def _prefill_on(self, entry, choice, sub: PreprocessedRequest, handle):
        """The transfer parameters from this prefill worker; `_ANOTHER_WORKER` when it failed in a way
        that says nothing about the request (unreachable, draining, gone mid-prefill, hung: it is
        inhibited, as the dispatcher does with decode workers); else the local fallback's answer."""
        worker = choice.worker
        started = time.monotonic()
        self.inflight[worker.instance_id] = self.inflight.get(worker.instance_id, 0) + 1
        try:
            params = await self._run(worker, with_dp_rank(sub, choice), handle)
        except StreamError as exc:
            if handle.cancelled or handle.shut or isinstance(exc, FellBehind):  # the client left or fell behind
                raise
            if exc.code == ErrorCode.LORA_NOT_LOADED:  # an unloaded adapter, not a failing worker: not inhibited
                return _ADAPTER_GONE
            reason = reason_for(exc)
            # A missed deadline may be the prompt, not the worker: a long prefill would miss it on every
            # prefill worker in turn (each one inhibited for everyone), so it is not retried elsewhere.
            if reason is not None and not isinstance(exc, StreamTimeout):
                self.inhibitor.inhibit(worker.instance_id, reason)
                log.warning("prefill worker %x failed (%s); trying another prefill worker", worker.instance_id, exc)
                return _ANOTHER_WORKER
            if reason is not None:  # a hung prefill worker is left out for a while all the same
                self.inhibitor.inhibit(worker.instance_id, reason)
            log.warning("prefill on worker %x failed (%s); %s", worker.instance_id, exc,
                        "answering 503 (--enforce-disagg)" if self.policy.enforce else "prefilling on the decode worker")
            return self._local(entry, PREFILL_FAILED)
        finally:
            self.inflight[worker.instance_id] -= 1
            self.routing.free(sub.request_id)
        if params is None:
            return self._local(entry, NO_TRANSFER_PARAMS)
        self._observe(entry.name, params, time.monotonic() - started)
        handle.prefill_worker_id, handle.prefill_dp_rank = worker.instance_id, choice.dp_rank
        return params

    async def _run(self, worker, sub: PreprocessedRequest, handle) -> dict[str, Any] | None:
        sent = self.stages.dispatched(PREFILL)
        try:
            call = handle.attach(await self.workers.open(worker.address or "", worker.endpoint.endpoint, sub,
                                                         sent.first))
        except BaseException:
            sent.close()
            raise
        params = None
        try:
            async for outputs in call:
                for out in outputs:
                    if out.error is not None:
                        raise StreamError(out.error, ErrorCode.ENGINE_ERROR)
                    if out.disaggregated_params is not None:
                        params = out.disaggregated_params
            return params
        finally:
            sent.close()
            handle.stream = None
            call.cancel()
            self.routing.prefill_complete(sub.request_id)

    def _local(self, entry, reason: str) -> None:
        if self.policy.enforce:
            raise errors.prefill_unavailable(reason)
        self.metrics.local.labels(entry.name, reason).inc()
        if reason not in POLICY_REASONS:  # the policy's choice is not a fallback
            self.metrics.decode_only.labels(entry.name).inc()
        return None

    def _observe(self, model: str, params: dict[str, Any], seconds: float) -> None:
        m = self.metrics
        m.remote.labels(model).inc()
        m.prefill.labels(model).observe(seconds)
        transport = str(params.get("transport") or params.get("transfer") or "unknown")
        if isinstance(params.get("kv_bytes"), (int, float)):
            m.kv_bytes.labels(model, transport).inc(params["kv_bytes"])
        if isinstance(params.get("transfer_seconds"), (int, float)):
            m.transfer.labels(model, transport).observe(params["transfer_seconds"])

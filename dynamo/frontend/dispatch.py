"""Sends a preprocessed request to a worker and streams its outputs back, with
worker selection by the routing policy (`dynamo.router.policy`), cancellation, and migration: when a
worker's stream breaks without its end marker, the request continues on another
worker with the tokens generated so far appended to the prompt. A worker that cannot
be reached, or that refuses the request because it is draining, is skipped before
anything was generated: the request goes to another worker whatever the migration limit.
Each such failure also inhibits the worker (`dynamo.router.inhibit`) so the requests that follow
skip it until discovery catches up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import msgspec

from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelEntry
from dynamo.frontend.openai import ApiError
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, output_decoder, request_encoder
from dynamo.router import inhibit
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import (AllWorkersBusy, Choice, NoWorkers, Role, RoutingPolicy, WorkerPool, pinned_worker,
                                  with_dp_rank)
from dynamo.runtime.rp_client import CannotConnect, Disconnected, RequestPlaneClient, ResponseStream, StreamError
from dynamo.runtime.wire import DRAINING

log = logging.getLogger(__name__)

_decode_output = output_decoder.decode


def no_workers(name: str) -> ApiError:
    return ApiError(503, f"No workers are available for model {name!r}; retry later",
                    "service_unavailable", None, "no_workers")


def busy_error() -> ApiError:
    return ApiError(503, "Service temporarily unavailable: all workers are busy, please retry later",
                    "service_unavailable", None, "all_workers_busy")


async def choose(policy: RoutingPolicy, pool: WorkerPool, request: PreprocessedRequest,
                 exclude: set[int]) -> Choice:
    """The policy's booked choice, its routing failures as OpenAI errors."""
    try:
        return await policy.select(pool, request, exclude)
    except AllWorkersBusy:
        raise busy_error() from None
    except NoWorkers:
        raise _unknown_pin(pool, request, exclude) or no_workers(pool.model) from None


def _unknown_pin(pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> ApiError | None:
    """A request pinned to a worker that does not serve this pool: the client's error, named."""
    pin = pinned_worker(pool, request)
    if pin is None or exclude or pool.get(pin[1]) is not None:
        return None
    name, iid = pin
    return ApiError(400, f"No worker with instance id {iid} ({iid:x}) serves {pool.name!r}",
                    "invalid_request_error", f"nvext.{name}", "worker_not_found")


class RequestHandle:
    """Lets the HTTP layer cancel whatever worker stream the request is on now."""

    __slots__ = ("stream", "cancelled", "worker_id")

    def __init__(self) -> None:
        self.stream: ResponseStream | None = None
        self.cancelled = False
        self.worker_id: int | None = None

    def cancel(self) -> None:
        """The client went away: stop the worker and end quietly."""
        self.cancelled = True
        self.stop_worker()

    def attach(self, stream: ResponseStream) -> ResponseStream:
        """Make `stream` the one cancel() reaches; a cancel that came first applies at once."""
        self.stream = stream
        if self.cancelled:
            stream.cancel()
        return stream

    def stop_worker(self) -> None:
        """We have what we need (e.g. a stop string matched): let the worker stop generating."""
        if self.stream is not None:
            self.stream.cancel()


def _error_for(exc: StreamError) -> ApiError:
    if exc.code == "overloaded":
        return ApiError(529, f"Worker overloaded: {exc}", "overloaded_error", None, "overloaded")
    if exc.code in ("bad_request", "invalid_request"):
        return ApiError(400, str(exc), "invalid_request_error", None, "invalid_request")
    if exc.code == "busy":
        return ApiError(503, str(exc), "service_unavailable", None, "all_workers_busy")
    return ApiError(500, f"Worker failed: {exc}", "internal_error", None, exc.code)


class Dispatcher:
    def __init__(self, client: RequestPlaneClient, policy: RoutingPolicy, migration_limit: int,
                 metrics: FrontendMetrics, prefill=None, inhibitor: Inhibitor | None = None) -> None:
        self.client = client
        self.policy = policy
        self.migration_limit = migration_limit
        self.metrics = metrics
        self.prefill = prefill  # PrefillOrchestrator: disaggregated serving when prefill workers exist
        self.inhibitor = inhibitor or Inhibitor(0)

    async def stream(self, entry: ModelEntry, request: PreprocessedRequest,
                     handle: RequestHandle) -> AsyncIterator[list[LLMEngineOutput]]:
        """Yields batches of engine outputs (everything that arrived together)."""
        exclude: set[int] = set()
        migrations = 0
        generated: list[int] = []
        original_prompt = request.token_ids
        original_max = request.stop_conditions.max_tokens
        if self.prefill is not None and request.disaggregated_params is None:
            try:
                params = await self.prefill.prefill(entry, request, handle)
            except StreamError:
                return  # cancelled by the client during prefill
            if handle.cancelled:
                return
            if params is not None:
                request = msgspec.structs.replace(request, disaggregated_params=params)
        while True:
            pool = entry.pool(Role.DECODE)
            choice = await choose(self.policy, pool, request, self.inhibitor.exclude(pool, request, exclude))
            worker = choice.worker
            handle.worker_id = worker.instance_id
            try:
                stream = await self.client.open_stream(worker.address or "", worker.endpoint.endpoint,
                                                       request_encoder.encode(with_dp_rank(request, choice)))
            except CannotConnect as exc:
                self.policy.free(request.request_id)
                exclude.add(worker.instance_id)
                self.inhibitor.inhibit(worker.instance_id, inhibit.CANNOT_CONNECT)
                log.warning("worker %x unreachable (%s); trying another", worker.instance_id, exc)
                self.metrics.migration(entry.name, "new_request")
                continue
            except BaseException:  # cancelled while dialling: the booking has no other owner yet
                self.policy.free(request.request_id)
                raise
            handle.attach(stream)
            first = True
            try:
                while True:
                    payloads = await stream.next_batch()
                    if not payloads:
                        return
                    outputs = [_decode_output(p) for p in payloads]
                    if first:
                        first = False
                        self.policy.prefill_complete(request.request_id)
                    for out in outputs:
                        generated.extend(out.token_ids)
                    yield outputs
            except Disconnected:
                if not handle.cancelled:
                    self.inhibitor.inhibit(worker.instance_id, inhibit.DISCONNECTED)
                if handle.cancelled or migrations >= self.migration_limit:
                    raise ApiError(502, f"worker {worker.instance_id:x} disconnected mid-stream",
                                   "internal_error", None, "worker_disconnected") from None
                migrations += 1
                exclude.add(worker.instance_id)
                self.metrics.migration(entry.name, "ongoing_request")
                log.warning("worker %x disconnected mid-stream; migrating request %s (%d/%d)",
                            worker.instance_id, request.request_id, migrations, self.migration_limit)
                request = _continued(request, original_prompt, original_max, generated)
                if request.stop_conditions.max_tokens == 0:
                    return
            except StreamError as exc:
                if handle.cancelled or exc.code == "cancelled":
                    return
                if exc.code == DRAINING and first:
                    # Sent before this frontend saw the worker leave discovery; it never started.
                    exclude.add(worker.instance_id)
                    self.inhibitor.inhibit(worker.instance_id, inhibit.DRAINING)
                    log.info("worker %x is draining; sending request %s elsewhere", worker.instance_id,
                             request.request_id)
                    self.metrics.migration(entry.name, "new_request")
                    continue
                raise _error_for(exc) from None
            finally:
                self.policy.free(request.request_id)
                if not stream.done:
                    stream.cancel()


def _continued(request: PreprocessedRequest, prompt: list[int], max_tokens: int | None,
               generated: list[int]) -> PreprocessedRequest:
    remaining = None if max_tokens is None else max(0, max_tokens - len(generated))
    stop = msgspec.structs.replace(request.stop_conditions, max_tokens=remaining)
    # The new worker prefills prompt + generated tokens itself: no transfer to pull.
    return msgspec.structs.replace(request, token_ids=prompt + generated, stop_conditions=stop,
                                   disaggregated_params=None)


async def aclose_quietly(gen) -> None:
    try:
        await gen.aclose()
    except (Exception, asyncio.CancelledError):
        pass

"""Sends a preprocessed request to a worker and streams its outputs back, with
worker selection by the routing policy (`dynamo.router.policy`), cancellation, and migration: when a
worker's stream breaks without its end marker, the request continues on another
worker with the tokens generated so far appended to the prompt (not a structured-output request that has
output already: its grammar would restart on the new worker). A worker that misses a
deadline (`--first-token-timeout-secs`, `--stream-idle-timeout-secs`) counts as such a break:
its stream is cancelled and the request migrates, or fails with 504. A worker that cannot
be reached, or that refuses the request because it is draining or no longer holds the request's LoRA
adapter, is skipped before anything was generated: the request goes to another worker whatever the
migration limit (an adapter no worker holds any more is a 404).
Each such failure also inhibits the worker (`dynamo.router.inhibit`) so the requests that follow
skip it until discovery catches up.

It owns the model-card check: a request goes only to workers of the card it was prepared for (its tokens, block
size); one whose model switched its card since is refused with `CardChanged` (a 503 `model_card_changed`) before
any worker, prefill or decode, gets it or any routing state is booked for it, and prepared again by
`preparation.prepared_again` while nothing of its answer was sent.

Where a model's workers span several namespaces (a managed rolling update), each request runs in one worker set
(`worker_sets.py`), chosen before its prefill: its prefill and decode workers come from that set, and a retry
stays there while the set has a decode worker left; one moved to another set is prefilled again there.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import AsyncIterator, Awaitable, Callable

import msgspec

from dynamo.frontend import errors
from dynamo.frontend.errors import ApiError
from dynamo.frontend.stage_metrics import AGGREGATED, DECODE, Dispatched
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.thinking_budget import ThinkingBudget, budget_for
from dynamo.frontend.worker_sets import Placement, Reroute, SetRouting
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, RoutingHints
from dynamo.llm.worker_client import NO_DEADLINES, Deadlines, WorkerClient, WorkerStream
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import (AllWorkersBusy, Choice, NoWorkers, Role, RoutingPolicy, WorkerInfo, WorkerPool,
                                  pinned_worker, with_dp_rank)
from dynamo.router.selector import WorkerHintRequired
from dynamo.runtime.rp_client import CannotConnect, Disconnected, RequestPlaneClient, StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)


def refuse_other_card(entry: ModelEntry, card: str, unsent: bool = False) -> None:
    """CardChanged when `entry` is served by another card than the one a request was prepared for (`unsent`: the
    caller knows nothing of its answer was sent; else the run decides)."""
    if card and entry.card.mdcsum and entry.card.mdcsum != card:
        raise errors.CardChanged(entry.name, unsent)


def refuse_worker_card(entry: ModelEntry, worker: WorkerInfo, card: str) -> None:
    """CardChanged when a routed `worker` is of another card than the request's (a pool read before a switch)."""
    if card and worker.card.mdcsum and worker.card.mdcsum != card:
        raise errors.CardChanged(entry.name)


async def choose(policy: RoutingPolicy, pool: WorkerPool, request: PreprocessedRequest,
                 exclude: set[int], book: bool = True) -> Choice:
    """The policy's choice, booked (`select`) or not (`query`), its routing failures as OpenAI errors."""
    try:
        return await (policy.select if book else policy.query)(pool, request, exclude)
    except AllWorkersBusy:
        raise errors.all_busy() from None
    except WorkerHintRequired as exc:
        raise errors.bad_request(str(exc), exc.param, "worker_id_required") from None
    except NoWorkers:
        raise _unknown_pin(pool, request, exclude) or errors.no_workers(pool.model) from None


def _behind(exc: StreamError) -> bool:
    """The worker is a relay (a global router) that lost the stream behind it: itself healthy."""
    return isinstance(exc, Disconnected) and exc.downstream


def _unknown_pin(pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> ApiError | None:
    """A request pinned to a worker that does not serve this pool: the client's error, named."""
    pin = pinned_worker(pool, request)
    if pin is None or exclude or pool.get(pin[1]) is not None:
        return None
    return errors.worker_not_found(*pin, pool.name)


class _Progress:
    """What a request produced so far, to continue it on another worker (migration)."""

    __slots__ = ("prompt", "max_tokens", "routing", "generated", "migrations", "adapter_gone")

    def __init__(self, request: PreprocessedRequest) -> None:
        self.prompt = request.token_ids
        self.max_tokens = request.stop_conditions.max_tokens
        self.routing = request.routing  # the client's hints, without a pin the frontend added since
        self.generated: list[int] = []
        self.migrations = 0
        self.adapter_gone: set[int] = set()  # workers that refused it for want of its LoRA adapter

    def continued(self, request: PreprocessedRequest) -> PreprocessedRequest:
        request = msgspec.structs.replace(request, routing=self.routing)
        return _continued(request, self.prompt, self.max_tokens, self.generated)


class Dispatcher:
    def __init__(self, client: RequestPlaneClient, policy: RoutingPolicy, migration_limit: int,
                 metrics: FrontendMetrics, prefill=None, inhibitor: Inhibitor | None = None,
                 deadlines: Deadlines = NO_DEADLINES, migration_max_seq_len: int | None = None,
                 rng: random.Random | None = None, sets: SetRouting | None = None) -> None:
        self.workers = WorkerClient(client, deadlines)
        self.policy = policy
        self.migration_limit = migration_limit
        # Past this many prompt + generated tokens a request is not moved: re-prefilling it elsewhere
        # would cost more than the client retrying (Dynamo's --migration-max-seq-len).
        self.migration_max_seq_len = migration_max_seq_len
        self.metrics = metrics
        self.prefill = prefill  # PrefillOrchestrator: disaggregated serving when prefill workers exist
        self.inhibitor = inhibitor or Inhibitor(0)
        # Each request's worker set where a model spans several namespaces: `__main__` gives this and the prefill
        # orchestrator the same one (a request's prefill keeps to its set too); a test's own otherwise (`rng`).
        self.sets = sets or SetRouting(rng, metrics.worker_set_requests, self.inhibitor)
        # --wait-for-workers-secs: a request that lost its model's last worker waits for the next one
        # (worker_wait.WorkerWait.for_request): (model, handle, workers it may not go to) -> the model's
        # entry once another worker serves it, or None at the deadline
        self.worker_wait: Callable[[str, RequestHandle, set[int]], Awaitable[ModelEntry | None]] | None = None
        # The requests under way (their runners add and remove them), so that a shutdown past its grace
        # can end them as what they are, `shutting_down`, not as workers that failed.
        self.live: set[RequestHandle] = set()
        self.closing = False

    def shut_down(self) -> None:
        """The frontend is exiting with requests still under way: stop their workers; each request ends
        with a `shutting_down` error (an SSE error event once streaming), and nothing is migrated and no
        worker inhibited, since nothing failed."""
        self.closing = True
        for handle in list(self.live):
            handle.shut_down()

    async def stream(self, entry: ModelEntry, request: PreprocessedRequest, handle: RequestHandle, card: str,
                     prompt: PromptReasoning = PromptReasoning.UNKNOWN) -> AsyncIterator[list[LLMEngineOutput]]:
        """Yields batches of engine outputs (everything that arrived together). `card`: the checksum of the card the
        request was prepared for (taken with the pipeline that made its tokens); only that card's workers may take
        it. `prompt`: where the request's prompt leaves the reasoning, where its reasoning budget starts counting."""
        request, budget = budget_for(request, entry.think_markers, prompt)
        progress = _Progress(request)  # the prompt as the client sent it, for a migration
        exclude: set[int] = set()
        placement = self.sets.place(entry, request, self.policy)  # once, before its prefill
        going_on = await self._prefilled(entry, request, handle, card, placement)  # None: the client went away
        while going_on is not None:  # the request for its next worker
            opened = await self._open(entry, going_on, exclude, handle, card, placement)
            if opened is None:
                return  # the client left while the request waited to be routed
            worker, call, sent, request = opened
            before = len(progress.generated)
            try:
                async for outputs in call:
                    self.policy.output(request.request_id)  # a step of its worker ended now
                    outputs, spent = _relayed(outputs, before > 0, budget)
                    for out in outputs:
                        progress.generated.extend(out.token_ids)
                    yield outputs
                    if spent:  # a deliberate end, as a stop string's: the worker counts no cancellation
                        call.stop()
                        break
                else:
                    return
                going_on = self._past_budget(entry, request, worker, handle, progress)
            except StreamError as exc:
                going_on = self._after_failure(entry, request, worker.instance_id, exc, call.started, handle,
                                               progress, exclude)
            finally:  # the tokens this worker generated: the router's output length and ITL
                sent.close()
                self.policy.free(request.request_id, len(progress.generated) - before)
                call.cancel()

    async def _prefilled(self, entry: ModelEntry, request: PreprocessedRequest, handle: RequestHandle,
                         card: str, placement: Placement) -> PreprocessedRequest | None:
        """The request with a prefill worker's transfer parameters (disaggregated serving; a prefill worker of
        the request's set), as it was when the decode worker prefills itself; None when the client went away."""
        if self.prefill is None or request.disaggregated_params is not None:
            return request
        refuse_other_card(entry, card)  # no prefill spent on what `_open` refuses
        try:
            params = await self.prefill.prefill(entry, request, handle, card, placement)
        except StreamError:
            if handle.shut and not handle.cancelled:
                raise errors.shutting_down() from None
            return None  # cancelled by the client during prefill
        if handle.cancelled:
            return None
        if params is None:
            return request
        return msgspec.structs.replace(request, disaggregated_params=params)  # `placement` says where (prefill)

    async def _open(self, entry: ModelEntry, request: PreprocessedRequest, exclude: set[int], handle: RequestHandle,
                    card: str, placement: Placement) -> tuple[WorkerInfo, WorkerStream, Dispatched,
                                                              PreprocessedRequest] | None:
        """Select, book and send to a decode worker of the request's set; one that cannot be reached never got
        the request, so the next is tried whatever the migration limit. With the stream, its `dispatch` stage
        (Dynamo's stage metrics), open until the first output, and the request as sent (prefilled again where
        its set had no decode worker left and it moved). None when the client left while it waited."""
        while True:
            if self.closing:  # nothing new starts once the frontend is past its grace
                raise errors.shutting_down()
            refuse_other_card(entry, card)  # before `choose` books load or binds a session for it
            pool = entry.pool(Role.DECODE)
            if self.worker_wait is not None and all(w.instance_id in exclude for w in pool.workers):
                # every worker it could go to is gone (a restart, a scale to zero): wait for a new one
                entry = await self.worker_wait(entry.name, handle, exclude) or entry
                refuse_other_card(entry, card)  # the worker that came may serve another card
                pool = entry.pool(Role.DECODE)
            limit = self.sets.limit(entry, placement, pool, request, exclude)
            if request.disaggregated_params is not None and placement.prefilled_in not in (None, placement.namespace):
                # moved to another set: the old set's transfer parameters are no good there
                request = await self._prefilled(entry, msgspec.structs.replace(request, disaggregated_params=None),
                                                handle, card, placement)
                if request is None:
                    return None
                continue
            phase = AGGREGATED if request.disaggregated_params is None else DECODE
            with self.metrics.stages.stage("route", phase):
                choice = await handle.routed(choose(self.policy, pool, request,
                                                    self.inhibitor.exclude(pool, request, limit)))
            if choice is None:
                return None
            reroute = self.sets.reroute(placement, pool, request, choice.worker, self.policy.free)
            if reroute is Reroute.GIVE_UP:
                raise errors.no_workers(entry.name)
            if reroute is Reroute.AGAIN:
                continue
            opened = await self._dial(entry, request, choice, exclude, handle, card, phase)
            if opened is not None:
                return choice.worker, *opened, request

    async def _dial(self, entry: ModelEntry, request: PreprocessedRequest, choice: Choice, exclude: set[int],
                    handle: RequestHandle, card: str, phase: str) -> tuple[WorkerStream, Dispatched] | None:
        """Send the request to the chosen worker; None when it cannot be reached (left out: try another)."""
        rid, worker = request.request_id, choice.worker
        try:
            refuse_worker_card(entry, worker, card)  # a pool snapshot queued before a switch
        except errors.CardChanged:
            self.policy.free(rid)  # preparation.prepared_again prepares it again, if nothing was sent yet
            raise
        handle.worker_id, handle.dp_rank, handle.overlap_blocks = worker.instance_id, choice.dp_rank, \
            choice.overlap_blocks
        sent = self.metrics.stages.dispatched(phase)

        def first_output(sent=sent) -> None:
            sent.first()
            self.policy.prefill_complete(rid)
        try:
            call = await self.workers.open(worker.address or "", worker.endpoint.endpoint,
                                           with_dp_rank(request, choice), first_output)
        except CannotConnect as exc:
            sent.close()
            self.policy.free(rid)
            exclude.add(worker.instance_id)
            self.inhibitor.inhibit(worker.instance_id, ErrorCode.CANNOT_CONNECT)
            log.warning("worker %x unreachable (%s); trying another", worker.instance_id, exc)
            self.metrics.migration(entry.name, "new_request")
            return None
        except BaseException:  # cancelled while dialling: the booking has no other owner yet
            sent.close()
            self.policy.free(rid)
            raise
        handle.attach(call)
        return call, sent

    def _after_failure(self, entry: ModelEntry, request: PreprocessedRequest, iid: int, exc: StreamError,
                       started: bool, handle: RequestHandle, progress: _Progress,
                       exclude: set[int]) -> PreprocessedRequest | None:
        """After a failed stream: the request to send to another worker (the failed one added to `exclude`), None
        to end quietly, or the client's error (raised)."""
        if self.closing and not handle.cancelled:
            raise errors.shutting_down() from None
        if isinstance(exc, (Disconnected, StreamTimeout)):
            retry = self._migrate(entry, request, iid, exc, handle, progress)
            if retry is not None and not _behind(exc):  # a relay that lost what is behind it may take it again
                exclude.add(iid)
            return retry
        if handle.cancelled or exc.code == ErrorCode.CANCELLED:
            return None
        if exc.code == ErrorCode.DRAINING and not started:
            # Sent before this frontend saw the worker leave discovery; it never started.
            self.inhibitor.inhibit(iid, ErrorCode.DRAINING)
            log.info("worker %x is draining; sending request %s elsewhere", iid, request.request_id)
            self.metrics.migration(entry.name, "new_request")
            exclude.add(iid)
            return request
        if exc.code == ErrorCode.LORA_NOT_LOADED and not started:
            return self._adapter_elsewhere(entry, request, iid, exclude, progress.adapter_gone)
        raise errors.from_stream_error(exc, entry.name) from None

    def _adapter_elsewhere(self, entry: ModelEntry, request: PreprocessedRequest, iid: int,
                           exclude: set[int], gone: set[int]) -> PreprocessedRequest:
        """The worker dropped the request's LoRA adapter before this frontend saw its card go (an unload): not
        the client's fault, nor the worker's (not inhibited: it serves its other models). The request goes to
        another worker discovery says holds the adapter; once every worker refused it so, the adapter is gone (404).
        A worker left out for another reason (unreachable) may still hold it: then the answer is routing's, a 503."""
        exclude.add(iid)
        gone.add(iid)
        if all(w.instance_id in gone for w in entry.pool(Role.DECODE).workers):
            log.info("no worker left holding LoRA adapter %r for request %s", entry.name, request.request_id)
            raise errors.model_not_found(entry.name)
        log.info("worker %x no longer holds LoRA adapter %r; sending request %s elsewhere (retry: lora_not_loaded, "
                 "counted as a new_request migration)", iid, entry.name, request.request_id)
        # Counted under Dynamo's `new_request` migration label (its label set is kept): a dashboard reading these
        # as lost workers should know that LoRA unloads bounce requests too; the log line above tells them apart.
        self.metrics.migration(entry.name, "new_request")
        return request

    def _migrate(self, entry: ModelEntry, request: PreprocessedRequest, iid: int, exc: StreamError,
                 handle: RequestHandle, progress: _Progress) -> PreprocessedRequest | None:
        # A timed-out worker is treated as a lost one: it may be hung (stopped, wedged engine), and
        # waiting on it would hang the client with it; its stream is already cancelled, so moving
        # the request does not leave two workers generating it. Without migration the client
        # gets a 504 (or an SSE error event once output was sent), never an endless wait.
        timed_out = isinstance(exc, StreamTimeout)
        if not handle.cancelled and not _behind(exc):
            self.inhibitor.inhibit(iid, ErrorCode.TIMEOUT if timed_out else ErrorCode.DISCONNECTED)
        if handle.cancelled or progress.migrations >= self.migration_limit:
            raise errors.worker_lost(iid, exc) from None
        if self._too_long_to_migrate(progress):
            self.metrics.migration_too_long.labels(entry.name).inc()
            raise errors.worker_lost(iid, exc) from None
        if progress.generated and request.sampling_options.guided_decoding is not None:
            # Structured output resumed elsewhere would restart its grammar after the tokens already sent
            # (the new engine sees them as prompt): invalid output. Dynamo never migrates these; before any
            # output there is nothing to restart, so that case still moves.
            log.warning("worker %x lost; request %s uses structured output and has output already: not migrated",
                        iid, request.request_id)
            raise errors.worker_lost(iid, exc) from None
        progress.migrations += 1
        self.metrics.migration(entry.name, "ongoing_request")
        log.warning("worker %x %s; migrating request %s (%d/%d)", iid, exc if timed_out else "disconnected mid-stream",
                    request.request_id, progress.migrations, self.migration_limit)
        request = progress.continued(request)
        return None if request.stop_conditions.max_tokens == 0 else request

    def _past_budget(self, entry: ModelEntry, request: PreprocessedRequest, worker: WorkerInfo,
                     handle: RequestHandle, progress: _Progress) -> PreprocessedRequest | None:
        """The request to go on with once its reasoning budget is spent (the closing tag is in
        `progress`): pinned to the worker whose cache holds it all, while that worker serves."""
        self.metrics.thinking_budget_spent(entry.name)
        request = progress.continued(request)
        if request.stop_conditions.max_tokens == 0 or handle.cancelled:
            return None
        if entry.pool(Role.DECODE).get(worker.instance_id) is None:
            return request
        routing = msgspec.structs.replace(request.routing or RoutingHints(), backend_instance_id=worker.instance_id,
                                          decode_worker_id=None, dp_rank=handle.dp_rank)
        return msgspec.structs.replace(request, routing=routing)

    def _too_long_to_migrate(self, progress: _Progress) -> bool:
        limit = self.migration_max_seq_len
        return limit is not None and len(progress.prompt) + len(progress.generated) > limit


def _continued(request: PreprocessedRequest, prompt: list[int], max_tokens: int | None,
               generated: list[int]) -> PreprocessedRequest:
    remaining = None if max_tokens is None else max(0, max_tokens - len(generated))
    stop = msgspec.structs.replace(request.stop_conditions, max_tokens=remaining)
    # The new worker prefills prompt + generated tokens itself: no transfer to pull.
    return msgspec.structs.replace(request, token_ids=prompt + generated, stop_conditions=stop,
                                   disaggregated_params=None)


def _relayed(outputs: list[LLMEngineOutput], resumed: bool,
             budget: ThinkingBudget | None) -> tuple[list[LLMEngineOutput], bool]:
    """A worker's batch as the client's stream gets it, and whether the reasoning budget ran out in
    it (then it ends with the closing tag). A resumed request's cache hit is not reported: its prompt
    holds tokens generated for it, and the client's prompt was counted on the first stream (its engine
    prompt length too)."""
    if resumed and outputs and (outputs[0].cached_tokens is not None or outputs[0].prompt_tokens is not None):
        outputs = [msgspec.structs.replace(outputs[0], cached_tokens=None, prompt_tokens=None), *outputs[1:]]
    if budget is None:
        return outputs, False
    outputs, spent = budget.spend(outputs)
    return (outputs + [budget.closing_output()] if spent else outputs), spent


async def aclose_quietly(gen) -> None:
    try:
        await gen.aclose()
    except (Exception, asyncio.CancelledError):
        pass

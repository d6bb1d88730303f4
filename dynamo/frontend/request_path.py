"""From a decoded generation request (a chat or completion, and the Responses and Messages requests that run as
one) to its run: prepared for the card its model is served by, that card and its pipeline taken once (`Served`:
the prompt's tokens, the wire requests and the output stage all come from them, and only that card's workers take
it), admitted, and run (`generation.GenerationRun`); prepared and run once more when a rolling update switched the
card before anything was sent (`preparation.prepared_again`). A completion of several prompts is prepared prompt by
prompt and run as one (`prompt_batch.py`). `FrontendApp.generate` counts the request in the
request metrics around it; which requests get in at all is `admission.Admission`'s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from dynamo.frontend import annotations, errors, prompt_batch
from dynamo.frontend.demand import Arrival
from dynamo.frontend.dispatch import refuse_other_card
from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.media_input import attach_images, request_images
from dynamo.frontend.metrics import RequestOutcome
from dynamo.frontend.openai import ChatCompletionRequest
from dynamo.frontend.preparation import (Served, attempt_id, client_prompt_ids, output_spec, prepared_again,
                                         prompt_ids_for, wire_requests)
from dynamo.frontend.request_log import RequestTrace
from dynamo.frontend.responses_truncation import ConversationFit
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.protocol import RoutingHints

Outcome = tuple[RequestOutcome, ApiError | None]


@dataclass
class RunInputs:
    """One request's inputs to the run path: the same for each time it is prepared."""

    req: Any
    endpoint: str  # the metrics' label
    body_size: int
    receive: Callable
    send: Callable
    run_cls: type
    hints: RoutingHints | None
    trace: RequestTrace | None
    speculate: bool  # its next turn is prefilled once it is answered (speculative_prefill.py)
    arrival: Arrival
    fit: ConversationFit | None  # what shortens a chat over the context (Responses' `truncation: auto`)
    started: float
    run_kw: dict = field(default_factory=dict)  # the run class's own arguments


@dataclass
class Prepared:
    """A request prepared for one card: what runs (a shortened chat, where `fit` cut it), its wire requests."""

    served: Served
    req: Any
    is_chat: bool
    ids: list[int]
    preqs: list
    prompt_events: bytes
    names: frozenset[str]  # the annotations it asked for
    speculate: bool
    batch: prompt_batch.PromptBatch | None = None  # a completion of several prompts: `preqs` are all of theirs


class RequestPath:
    """A generation request's way from its decoded body to its outcome, on the app's admission, dispatcher and prep
    pool: each attempt takes the card its model is served by (`Served`), prepares the request for it, admits and runs
    it (or answers its routing query); `serve` makes a second attempt where the card switched before anything was
    sent."""

    def __init__(self, app) -> None:
        self.app = app

    async def serve(self, inputs: RunInputs) -> Outcome:
        """Prepare and run the request, again once where its card switched before it was dispatched."""
        model, trace = inputs.req.model, inputs.trace
        def again() -> None:  # labelled only when it happens: a served model's name, never any name a client sends
            self.app.metrics.card_reprepared.labels(model).inc()

        return await prepared_again(model, partial(self._attempt, inputs),
                                    trace.request_id if trace is not None else None, again)

    async def _attempt(self, inputs: RunInputs, attempt: int) -> Outcome:
        admission = self.app.admission
        entry = await admission.served_entry(inputs.req.model, inputs.receive)
        served = Served.of(entry)  # taken once: this request is prepared for this card, run on its workers
        req = inputs.run_cls.for_card(inputs.req, entry, **inputs.run_kw)
        admission.refuse_if_overloaded(entry.name)
        prepared = await self._prepared(inputs, served, req, attempt)
        admission.refuse_if_overloaded(entry.name)
        admission.refuse_if_draining()
        if annotations.QUERY_INSTANCE_ID in prepared.names:
            return await self._routing_query(entry, prepared, inputs)
        return await self._run(inputs, entry, prepared, attempt)

    async def _prepared(self, inputs: RunInputs, served: Served, req, attempt: int) -> Prepared:
        """The request's tokens and wire requests, all from `served` (the card it is prepared for)."""
        app, pipeline = self.app, served.pipeline
        is_chat = isinstance(req, ChatCompletionRequest)
        kind = "chat" if is_chat else "completions"
        if kind not in served.card.model_type:
            raise bad_request(f"model {served.name!r} does not serve {kind}", "model", "unsupported_model")
        if not is_chat and prompt_batch.is_batched(req):
            return await self._prepared_batch(inputs, served, req, attempt)
        images = request_images(served, req, app.media_policy)
        names = annotations.requested(req.nvext)
        with app.metrics.stages.stage("preprocess"):
            def tokenize(r):
                return tokenized_prompt(pipeline, r, inputs.hints, inputs.body_size, names, app.prep_pool)

            if inputs.fit is None:
                ids, prompt_events = await tokenize(req)
            else:  # a chat over the context is shortened to fit: what runs is the chat it answers
                req, (ids, prompt_events) = await inputs.fit(tokenize, pipeline.context_length, req)
                images = request_images(served, req, app.media_policy)
        preqs = wire_requests(pipeline, req, ids, is_chat, inputs.hints, *_trace_ids(inputs.trace, attempt))
        speculate = inputs.speculate
        if images:
            attach_images(pipeline, preqs, ids, images)
            speculate = False  # a next turn's prefill would go without the images
            await asyncio.sleep(0)  # hashing them was one pass over their data, encoding them is the next
        return Prepared(served, req, is_chat, ids, preqs, prompt_events, names, speculate)

    async def _prepared_batch(self, inputs: RunInputs, served: Served, req, attempt: int) -> Prepared:
        """A completion of several prompts: each prompt prepared as its own request, run as one
        (`prompt_batch.BatchedCompletionRun`, which `_run` takes for a batch: a route's own run class is refused
        here, never lost)."""
        if inputs.run_cls is not GenerationRun or inputs.run_kw:
            raise TypeError(f"batched prompts run as BatchedCompletionRun, not {inputs.run_cls.__name__}")
        app = self.app
        with app.metrics.stages.stage("preprocess"):
            batch = await prompt_batch.prepare(served.pipeline, req, inputs.hints, app.prep_pool,
                                               *_trace_ids(inputs.trace, attempt))
        return Prepared(served, req, False, batch.ids[0], batch.preqs, b"", annotations.requested(req.nvext), False,
                        batch)

    async def _run(self, inputs: RunInputs, entry, p: Prepared, attempt: int) -> Outcome:
        """Admit the prepared request and run it on `entry` (the model as served now; only its card's workers)."""
        app, trace = self.app, inputs.trace
        app.admission.admit(entry.name)
        status = RequestOutcome.ERROR
        try:
            run_cls, run_kw = ((inputs.run_cls, inputs.run_kw) if p.batch is None else
                               (prompt_batch.BatchedCompletionRun, {"batch": p.batch}))
            run = run_cls(app, p.served, p.req, p.preqs, p.is_chat, inputs.started,
                          output_spec(p.served, p.req, p.is_chat, p.ids), app.reasoning_field,
                          may_retry=attempt == 0, **run_kw)
            run.keep_answer, run.endpoint = p.speculate, inputs.endpoint
            run.on_first_response = inputs.arrival.first_response
            if trace is not None:
                run.public_id = trace.request_id
            run.prompt_events = p.prompt_events
            status = await run.execute(entry, inputs.receive, inputs.send, "stream" if p.req.stream else "unary")
            if p.speculate and status == RequestOutcome.SUCCESS:
                app.speculative.start(entry, p.req, run.answer_history(), inputs.hints)
        finally:
            app.admission.release(entry.name)
            if trace is not None:
                trace.outcome = status
                if status == RequestOutcome.CANCELLED:
                    trace.cancelled_by_client()
        if trace is not None:
            trace.stream_error = run.error
        return status, run.error

    async def _routing_query(self, entry, p: Prepared, inputs: RunInputs) -> Outcome:
        """`query_instance_id`: no stream is opened, so no Dispatcher checks its card: checked here, before routing
        and on the workers routed to. Nothing is sent before its answer: a switch prepares it again."""
        card = p.served.card.mdcsum
        refuse_other_card(entry, card, unsent=True)
        try:
            await annotations.answer_routing_query(self.app.dispatcher, entry, p.preqs[0], card, p.is_chat,
                                                   p.req.stream, inputs.send)
        except errors.CardChanged as exc:
            exc.unsent = True  # prepared again (`prepared_again`)
            raise
        if inputs.trace is not None:
            inputs.trace.outcome = RequestOutcome.SUCCESS
        return RequestOutcome.SUCCESS, None


async def tokenized_prompt(pipeline, req, hints: RoutingHints | None, body_size: int, names: frozenset[str],
                           pool) -> tuple[list[int], bytes]:
    """The prompt's token ids (the gateway's `token_data`, else templated and tokenized here, on `pool` where it is
    not cheap), and the `formatted_prompt` / `token_ids` annotation events a stream opens with; a 400 for a bad
    prompt."""
    try:
        given = client_prompt_ids(pipeline, req, hints)
        ids = given or await prompt_ids_for(pipeline, req, body_size, pool)
        return ids, annotations.prompt_events(names, pipeline, req, ids, tokenized_here=given is None)
    except PreprocessError as exc:
        raise errors.bad_prompt(exc) from None


def _trace_ids(trace: RequestTrace | None, attempt: int) -> tuple[str | None, str | None]:
    """The wire request's id (this attempt's: `attempt_id`) and trace id, from the request's trace."""
    if trace is None:
        return None, None
    return attempt_id(trace.wire_id(), attempt), trace.trace_id

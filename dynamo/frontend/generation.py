"""One generation request from its first worker call to its last byte: fans `n`
choices out to the workers (read back as one stream: `fan_in.py`), runs each choice's token
stream through its output stage (`output.py`) and frames the result as SSE chunks or one JSON
body (`sse.py`; a unary one by `unary_answer.py`); its latency and size metrics
are `run_timing.py`'s. What its worker streams hold undelivered for a client that does not keep up is
bounded (`client_backlog.py`): past the bound the request is cancelled at its workers.

The response status is decided after the first batch of tokens arrives, so failures
before any output (no worker, overload, bad prompt) get a real HTTP error instead of a
200 with an error event.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dynamo.frontend import annotations, client_backlog, errors, fan_in, response_ext
from dynamo.frontend.choices import Choice, collect, echo_text, token_text
from dynamo.frontend.dispatch import aclose_quietly
from dynamo.frontend.errors import ApiError
from dynamo.frontend.logprob_json import ChatLogprobs
from dynamo.frontend.metrics import RequestOutcome
from dynamo.frontend.output import ChoiceDelta, OutputSpec, OutputStage
from dynamo.frontend.preparation import first_attempt_id
from dynamo.frontend.run_timing import RunTiming
from dynamo.frontend.stream_dispatch import StreamDispatch
from dynamo.frontend.unary_answer import UnaryAnswer
from dynamo.frontend.sse import (
    DONE, SSE_HEADERS, ChatChunks, CompletionChunks, completion_logprobs,
    error_event, tool_call_entries, usage_dict,
)
from dynamo.llm.protocol import FinishReason
from dynamo.runtime import rp_backlog
from dynamo.runtime.rp_backlog import Backlog

# A streamed batch whose chunk is larger than this lets other requests run before the next one.
YIELD_AFTER_BYTES = 64 * 1024


class GenerationRun(UnaryAnswer):
    def __init__(self, app, entry, req, preqs: list, is_chat: bool, started: float, spec: OutputSpec,
                 reasoning_field: str = "reasoning_content", *, may_retry: bool = False) -> None:
        """`entry`: what the request was prepared by (`preparation.Served`: a card and its pipeline, taken together;
        only that card's workers take it). `may_retry`: a CardChanged before its first response is prepared and
        run again (`preparation.prepared_again`), so this run's end is not the request's (no metrics)."""
        self.app = app
        self.model = entry.name
        self.pipeline = entry.pipeline
        self.req = req
        self.preqs = preqs
        wire_id = preqs[0].request_id.rsplit("-", 1)[0] if len(preqs) > 1 else preqs[0].request_id
        self.request_id = first_attempt_id(wire_id)  # a second attempt's answer keeps the request's id
        self.timing = RunTiming(app.metrics, self.model, started)
        self.created = int(time.time())
        self.is_chat = is_chat
        self.chunks = (ChatChunks if is_chat else CompletionChunks)(self.request_id, self.model, self.created)
        self.choices = [Choice(i, OutputStage(entry.pipeline, spec)) for i in range(len(preqs))]
        self.prompt_reasoning = spec.prompt_reasoning  # the budget starts where the parsers do
        self.want_logprobs = preqs[0].output_options.logprobs is not None
        self.reasoning_field = reasoning_field
        self.keep_answer = False  # a stream also collects its answer (a unary one always does): speculative prefill
        self.cached_tokens = 0
        self.engine_prompt_tokens: int | None = None  # the engine's count, where it differs (images expanded)
        self.extra_fields = response_ext.requested(req.nvext)
        self.annotations = annotations.requested(req.nvext)
        self.public_id = self.request_id  # the id the client and the logs know it by (the host may set it)
        self.endpoint = "chat_completions" if is_chat else "completions"  # the metrics' label (the host sets it)
        self.prompt_events = b""  # `formatted_prompt` / `token_ids` annotations, when asked for (the host sets them)
        self.on_first_response = None  # the host's: the request leaves dynamo_frontend_queued_requests
        self.card = entry.card.mdcsum  # the card it was prepared for: only its workers take it (Dispatcher)
        self.may_retry = may_retry
        self.superseded = False  # ended by a card switch before anything was sent, and prepared again
        tools, reasoning = app.stream_dispatch
        self.dispatch = (StreamDispatch(tools, reasoning, reasoning_field)
                         if is_chat and req.stream and (tools or reasoning) else None)
        self.block_size = entry.card.kv_cache_block_size
        self.error: ApiError | None = None  # what ended the stream after its 200: sent as an error event
        self.echo = self._echo(req)
        self._token_text = token_text(req, self.pipeline.tokenizer.decode)  # how logprob tokens are spelled
        self._chat_logprobs = ChatLogprobs(self._token_text)
        self.backlog = Backlog(client_backlog.limit_of(app))  # what its worker streams may hold for a slow client

    def _echo(self, req) -> str:
        """Completions `echo`: the prompt's text, before each choice's (a batch's choices echo their own prompts)."""
        return echo_text(req, self.preqs[0].token_ids, self.pipeline.tokenizer.decode)

    @classmethod
    def for_card(cls, req, entry, **run_kw):
        """The request as it runs on the card `entry` is served by now, made again each time it is prepared (a
        run class whose request depends on the card, as Messages' thinking budget does, overrides it)."""
        return req

    # -- lifecycle -----------------------------------------------------------------------------
    async def execute(self, entry, receive, send, request_type: str) -> RequestOutcome:
        """The run's outcome, on `entry` (the model as served now). A CardChanged while nothing was sent to the
        client (before a stream's first response, whose headers follow it; before a unary answer's body, which
        follows its last batch) is `unsent` while its client is still there: it may be prepared again. Once a
        stream had its first response, its error event stands, as the worker may have generated."""
        self.backlog.on_trip = client_backlog.on_cut(self.app, self.public_id, self.model, self.endpoint, request_type)
        with rp_backlog.counting(self.backlog):  # the worker streams it opens, migrations' too
            return await self._execute(entry, receive, client_backlog.watched(send, self.backlog))

    async def _execute(self, entry, receive, send) -> RequestOutcome:
        app = self.app
        gens = [app.dispatcher.stream(entry, p, c.handle, self.card, self.prompt_reasoning)
                for p, c in zip(self.preqs, self.choices)]
        merged = fan_in.merged(gens)
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(self._on_receive)
        handles = [c.handle for c in self.choices]
        app.dispatcher.live.update(handles)
        try:
            try:
                return await self._respond(merged, send)
            except errors.CardChanged as exc:  # nothing was sent yet: `_respond` says why
                return await self._superseded(exc, watcher)
        finally:
            app.dispatcher.live.difference_update(handles)
            watcher.remove_done_callback(self._on_receive)
            watcher.cancel()
            await aclose_quietly(merged)
            for gen in gens:
                await aclose_quietly(gen)
            if not self.superseded:
                self.timing.ended(self.choices[0].handle, self.choices[0].stage.completion_tokens,
                                  self.input_tokens, self.completion_tokens, self.cached_tokens)

    async def _respond(self, merged, send) -> RequestOutcome:
        """The response, from the first batch on. A CardChanged leaves it only while nothing was sent: before the
        first batch (a stream's headers follow it), or at any point of a unary answer (its body is sent after the
        last batch; with n>1 one choice may be refused after another's output). A stream's later one ends it with
        an error event (`_stream`)."""
        try:
            first = await merged.__anext__()
        except StopAsyncIteration:
            first = None
        if self.cancelled:
            return RequestOutcome.CANCELLED
        self.timing.first_response(self.choices[0].handle, len(self.preqs[0].token_ids))
        if self.on_first_response is not None:
            self.on_first_response()
        if self.req.stream:
            await self._stream(merged, first, send)
        else:
            await self._unary(merged, first, send)
        return (RequestOutcome.CANCELLED if self.cancelled or self.backlog.tripped else
                RequestOutcome.SUCCESS if self.error is None else RequestOutcome.ERROR)

    async def _superseded(self, exc: errors.CardChanged, watcher: asyncio.Future) -> RequestOutcome:
        """A CardChanged before anything was sent: raised `unsent` (prepared again), unless its client left."""
        await asyncio.sleep(0)  # one turn for the watcher: with n=1 the refusal came without a yield
        if self.cancelled or _left(watcher):
            return RequestOutcome.CANCELLED
        exc.unsent, self.superseded = True, self.may_retry  # its retry is the request's one run (metrics)
        raise exc

    @property
    def cancelled(self) -> bool:
        return self.choices[0].handle.cancelled

    def _on_receive(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None or task.result().get("type") == "http.disconnect":
            self.app.metrics.disconnects.inc()
            if not self.backlog.tripped:  # cut for its backlog: already counted then
                self.app.metrics.cancellations.labels(self.model, self.endpoint,
                                                      "stream" if self.req.stream else "unary").inc()
            for choice in self.choices:
                choice.handle.cancel()

    # -- token batches -------------------------------------------------------------------------
    @property
    def completion_tokens(self) -> int:
        return sum(c.stage.completion_tokens for c in self.choices)

    def _absorb(self, choice: Choice, outputs) -> ChoiceDelta:
        """Fold a batch of engine outputs into one delta; sets `choice.finish` when done."""
        total = ChoiceDelta()
        stage = choice.stage
        for out in outputs:
            if out.cached_tokens is not None:
                self.cached_tokens = max(self.cached_tokens, out.cached_tokens)
            if out.prompt_tokens is not None:
                self.engine_prompt_tokens = max(self.engine_prompt_tokens or 0, out.prompt_tokens)
            if out.error is not None:
                self.error = errors.engine_error(out.error)
                raise self.error
            d = stage.add(out, self.want_logprobs)
            total.content += d.content
            total.reasoning += d.reasoning
            total.tool_calls += d.tool_calls
            total.logprobs += d.logprobs
            if stage.stopped:
                choice.finish = FinishReason.STOP
                choice.handle.stop_worker()
                break
            if out.finish_reason is not None:
                choice.finish, choice.stop_reason = out.finish_reason, out.stop_reason
        self.timing.batch(sum(len(out.token_ids) for out in outputs))
        return total

    @property
    def input_tokens(self) -> int:
        """The prompt's length as we tokenized it (the ISL metric; a batch's, every prompt's)."""
        return len(self.preqs[0].token_ids)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's length for usage: the engine's count where it sent one (images expanded), else ours."""
        return self.engine_prompt_tokens or self.input_tokens

    @property
    def reasoning_tokens(self) -> int:
        """The completion tokens the reasoning parser routed into reasoning, every choice's."""
        return sum(c.stage.reasoning_tokens for c in self.choices)

    def _usage(self) -> dict:
        usage = usage_dict(self.prompt_tokens, self.completion_tokens, self.cached_tokens)
        if self.is_chat:  # as OpenAI's chat usage has it (Responses' names it output_tokens_details)
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    async def _batches(self, merged, first):
        """The batches, until every choice is done; an error ending them (a worker lost, the frontend shutting
        down, a client too far behind) is the run's, whichever framing turns it into an error event."""
        if first is not None:
            yield first
        if all(c.done for c in self.choices):
            return
        try:
            async for item in merged:
                yield item
                if all(c.done for c in self.choices):
                    return
            if self.backlog.tripped:  # its worker streams were cut: they end as if cancelled
                raise client_backlog.fell_behind(self.backlog)
        except ApiError as exc:
            if not self.backlog.tripped:
                self.error = exc
                raise
            self.error = client_backlog.fell_behind(self.backlog)
            raise self.error from None

    # -- streaming -----------------------------------------------------------------------------
    def _delta_bytes(self, choice: Choice, d: ChoiceDelta) -> bytes:
        """The delta's chunk, after any early-dispatch events it brings (stream_dispatch.py)."""
        events = self.dispatch.events(choice.index, d) if self.dispatch is not None else b""
        return events + self._chunk_bytes(choice, d)

    def _chunk_bytes(self, choice: Choice, d: ChoiceDelta) -> bytes:
        if not self.is_chat:
            if self.echo and not choice.started:
                choice.started = True
                d.content = self.echo + d.content
            if not d.content and not d.logprobs:
                return b""
            lp = None
            if d.logprobs:
                lp = completion_logprobs(d.logprobs, self._token_text, choice.text_len)
            choice.text_len += len(d.content)
            return self.chunks.content(d.content, index=choice.index, logprobs=lp)
        if not (d.reasoning or d.tool_calls or d.logprobs):
            if not d.content:
                return b""
            first, choice.started = not choice.started, True
            return self.chunks.content(d.content, first, choice.index)
        delta: dict[str, Any] = {}
        if not choice.started:
            delta["role"] = "assistant"
            choice.started = True
        if d.content or not (d.reasoning or d.tool_calls):
            delta["content"] = d.content
        if d.reasoning:
            delta[self.reasoning_field] = d.reasoning
        if d.tool_calls:
            delta["tool_calls"] = tool_call_entries(d.tool_calls)
        lp = self._chat_logprobs(d.logprobs) if d.logprobs else None
        return self.chunks.delta(choice.index, delta, lp)

    def _finish_bytes(self, choice: Choice) -> bytes:
        d = choice.stage.finish()
        if self.keep_answer:
            self._collect(choice, d)
        body = self._delta_bytes(choice, d)
        if self.dispatch is not None:  # reasoning cut short (max_tokens): its block still goes out
            body += self.dispatch.end_of_reasoning(choice.index)
        first = not choice.started
        choice.started = True
        return body + self.chunks.finish(choice.stage.finish_reason(choice.finish), first, choice.index)

    async def _stream(self, merged, first, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        opening = self.prompt_events
        if annotations.REQUEST_ID in self.annotations:
            opening = annotations.event(annotations.REQUEST_ID, self.public_id) + opening
        if opening:
            await send({"type": "http.response.body", "body": opening, "more_body": True})
        try:
            async for i, outputs in self._batches(merged, first):
                choice = self.choices[i]
                if choice.done:
                    continue
                d = self._absorb(choice, outputs)
                if self.keep_answer:
                    self._collect(choice, d)
                body = self._delta_bytes(choice, d)
                if choice.done:
                    body += self._finish_bytes(choice)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    if len(body) > YIELD_AFTER_BYTES:  # a big batch (many tokens, logprobs): others' turn
                        await asyncio.sleep(0)
            body = b"".join(self._finish_bytes(c) for c in self.choices if not c.done)
            if self.req.stream_options is not None and self.req.stream_options.include_usage:
                body += self.chunks.usage(self._usage())
            if (nvext := response_ext.of_run(self)) is not None:
                body += self.chunks.extension(nvext)
            await send({"type": "http.response.body", "body": body + DONE, "more_body": False})
        except ApiError as exc:
            if self.cancelled:
                return
            self.error = exc
            await send({"type": "http.response.body", "body": error_event(exc.body()) + DONE, "more_body": False})

    # -- unary ---------------------------------------------------------------------------------
    async def _collect_answers(self, merged, first) -> bool:
        """Fold every choice's whole stream into its collected answer (the unary framings); False when
        the client left before they all finished, so there is nothing to send."""
        async for i, outputs in self._batches(merged, first):
            choice = self.choices[i]
            if not choice.done:
                self._collect(choice, self._absorb(choice, outputs))
            if self.want_logprobs or len(outputs) > 64:  # a heavy batch: others' turn before the next one
                await asyncio.sleep(0)
        if self.cancelled and not all(c.done for c in self.choices):
            return False
        for choice in self.choices:
            self._collect(choice, choice.stage.finish())
        return True

    _collect = staticmethod(collect)


def _left(watcher: asyncio.Future) -> bool:
    """Whether the client's receive watcher has seen it leave (its callback, which cancels the run, may not have
    run yet)."""
    if not watcher.done() or watcher.cancelled():
        return False
    return watcher.exception() is not None or watcher.result().get("type") == "http.disconnect"

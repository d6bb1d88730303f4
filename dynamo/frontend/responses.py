"""`/v1/responses` (OpenAI Responses API) over the chat pipeline: the request converts
itself to a chat request (input items -> messages, Responses tools -> chat tools), the
same output stage runs, and the result is framed as a Response object or as its event
sequence (the output items' events are `responses_events`):

    response.created, response.in_progress, (the events of each output item, one at a time),
    response.completed | response.incomplete

Reasoning, text and function calls are each their own output item. The Response echoes the
request's settings (`text.format` as asked among them).
A function call is one whose arguments became JSON, as on chat: one that did not
(cut off, malformed) is answered as the text the model wrote; a stream holds its
calls back until the answer is complete to end the same way (`HeldCalls`).
Stopping at `max_output_tokens` gives `status: "incomplete"`, and the item it cut
(the last; a call's arguments, JSON, are whole) is `incomplete` too. An error after
the stream started is an `error` event and `response.failed`.
Asked for (`include: ["message.output_text.logprobs"]`, `top_logprobs`), the text carries its tokens'
logprobs, unary and streamed (`responses_logprobs`); usage's `reasoning_tokens` are the tokens the
reasoning parser made reasoning of (`reasoning_tokens`), as chat's usage counts them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from dynamo.frontend import speculative_prefill
from dynamo.frontend.errors import ApiError
from dynamo.frontend.choices import Choice, HeldCalls, chat_choice, text_first
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.openai import ChatCompletionRequest, ChatMessage
from dynamo.frontend.responses_events import OutputEvents, answer_items
from dynamo.frontend.responses_logprobs import TextLogprobs
from dynamo.frontend.responses_truncation import ConversationFit
from dynamo.frontend.responses_request import ResponsesRequest, decode_responses, input_messages, own_names
from dynamo.frontend.responses_store import (INPUT_ITEMS_SUFFIX, PREFIX, RESPONSE_PREFIX, ResponseStore,
                                             StoredResponse, forwarded, input_items, item_list, not_found,
                                             previous_conversation, resolved_input)
from dynamo.frontend.validation import validate_chat
from dynamo.frontend.output import ChoiceDelta, is_json
from dynamo.frontend.request_log import SCOPE_KEY
from dynamo.frontend.inprocess import BACKGROUND
from dynamo.frontend.replicas import new_id
from dynamo.frontend.routing_hints import routing_hints
from dynamo.frontend.sse import SSE_HEADERS
from dynamo.llm.protocol import FinishReason, RoutingHints
from dynamo.runtime.asgi import send_bytes, send_json

_json = msgspec.json.encode
# The Response's `error.code` (a fixed set in OpenAI's API) for an HTTP status; anything else is server_error.
_FAILED_CODES = {400: "invalid_prompt", 429: "rate_limit_exceeded"}


class ResponsesRun(GenerationRun):
    """A chat generation framed as a Response (one choice)."""

    def __init__(self, *args, responses_req: ResponsesRequest, history: list[ChatMessage],
                 store: ResponseStore | None, truncated: ConversationFit | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.rreq = responses_req
        self.history = history  # the conversation a previous_response_id continued
        self.truncated = truncated  # the conversation as it ran, where `truncation: auto` shortened it
        self.store = store if responses_req.store else None
        self.response_id = new_id(RESPONSE_PREFIX, store.tag if store is not None else "")
        # The output items, and a stream's events; their text's logprobs where the request asked for them.
        self.events = OutputEvents(self._chat_logprobs.content if self.want_logprobs else None)
        self.text_logprobs: TextLogprobs | None = None  # which entries are the text's, where logprobs were asked
        if self.want_logprobs:
            stage = self.choices[0].stage
            decode = partial(self.pipeline.tokenizer.decode, skip_special_tokens=False)
            self.text_logprobs = TextLogprobs(decode, calls=stage.tools is not None)
            stage.logprob_route = self.text_logprobs.take
        self.hold = HeldCalls(is_json)
        self._sent_entries = 0  # the logprob entries the text sent before calls were held carried

    # -- the Response object -------------------------------------------------------------------
    def _response(self, status: str, items: list[dict], usage: dict | None) -> dict:
        choice = self.choices[0]
        incomplete = status == "incomplete"
        return {"id": self.response_id, "object": "response", "created_at": self.created, "model": self.model,
                "status": status, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                "instructions": self.rreq.instructions, "max_output_tokens": self.rreq.max_output_tokens,
                "output": items, "parallel_tool_calls": self.rreq.parallel_tool_calls is not False,
                "temperature": self.rreq.temperature, "top_p": self.rreq.top_p,
                "tool_choice": self.rreq.tool_choice or "auto", "tools": self.rreq.tools or [],
                "metadata": self.rreq.metadata or {}, "text": self._text(),
                "previous_response_id": self.rreq.previous_response_id, "store": self.store is not None,
                "truncation": self.rreq.truncation or "disabled", "top_logprobs": self.rreq.top_logprobs or 0,
                "usage": usage, "_finish": choice.finish}

    def _usage(self) -> dict:
        u = super()._usage()
        return {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                "total_tokens": u["total_tokens"],
                "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                # Nothing is written to a cache a client pays for: KV blocks are reused, never billed.
                "input_tokens_details": {"cached_tokens": self.cached_tokens, "cache_write_tokens": 0}}

    def _text(self) -> dict:
        """The request's `text` as asked (its `format`: plain text unless it asked for JSON)."""
        return {"format": {"type": "text"}, **(self.rreq.text or {})}

    def answer_history(self) -> list[ChatMessage]:
        """The output items as the client's next turn sends them back in its input, converted as that
        input will be (reasoning items dropped, each function call its own assistant message)."""
        return input_messages(self.events.items)

    def _status(self, choice: Choice) -> str:
        return "incomplete" if choice.finish == FinishReason.LENGTH else "completed"

    def _body(self, response: dict) -> dict:
        response.pop("_finish", None)
        return response

    def _save(self, response: dict) -> None:
        """Keep a finished response and its conversation, for a later previous_response_id."""
        if self.store is not None:
            conversation = self.history + input_messages(self.rreq.input)
            if self.truncated is not None and self.truncated.messages is not None:  # the next turn goes on from it
                conversation = self.truncated.messages[1 if self.rreq.instructions else 0:]
            conversation = conversation + self.answer_history()
            self.store.put(StoredResponse(response, conversation, input_items(self.rreq.input)))

    def _text_logprobs(self, choice: Choice, text: str) -> list | None:
        """The unary answer's text's logprobs (None: not asked for); where the text is not what the stage
        made of it (a call that never became JSON, answered as what the model wrote), that text's."""
        if self.text_logprobs is None:
            return None
        entries = choice.logprobs
        if text != "".join(choice.content) and self.text_logprobs.written is not None:
            entries = self.text_logprobs.written_as(text)
        return self._chat_logprobs.content(entries)

    async def _unary(self, merged, first, send) -> None:
        if not await self._collect_answers(merged, first):
            return
        choice = self.choices[0]
        status = self._status(choice)
        message = chat_choice(choice, self.reasoning_field, None, self.hold.runnable)["message"]  # its stream's rule
        logprobs = self._text_logprobs(choice, message.get("content") or "")
        items = answer_items(message, self.reasoning_field, status == "incomplete",
                             text_first(choice.content, choice.reasoning), logprobs)
        self.events.items = items
        body = self._body(self._response(status, items, self._usage()))
        self._save(body)
        await send_bytes(send, 200, _json(body))

    # -- streaming -----------------------------------------------------------------------------
    async def _stream(self, merged, first, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        created = self._body(self._response("in_progress", [], None))
        head = self.events.event("response.created", response=created) + self.events.event(
            "response.in_progress", response=created)
        await send({"type": "http.response.body", "body": head, "more_body": True})
        choice = self.choices[0]
        try:
            async for _, outputs in self._batches(merged, first):
                if choice.done:
                    continue
                body = self._sent(self._absorb(choice, outputs))
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            body = self._sent(choice.stage.finish())
            body += self._released(choice)
            status = self._status(choice)
            body += self.events.finish(incomplete=status == "incomplete")
            final = self._body(self._response(status, self.events.output(), self._usage()))
            self._save(final)
            body += self.events.event(f"response.{status}", response=final)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except ApiError as exc:
            if self.cancelled:
                return
            await send({"type": "http.response.body", "body": self._failure(exc), "more_body": False})

    def _sent(self, d: ChoiceDelta) -> bytes:
        """The delta's events, or none while the answer's calls are held back."""
        sent = self.hold.take(d)
        if sent is None:
            return b""
        self._sent_entries += len(sent.logprobs)
        return self.events.delta(sent)

    def _released(self, choice: Choice) -> bytes:
        """The events of what was held back, once the answer is complete."""
        route = self.text_logprobs
        written = self._written_as if route is not None and route.written is not None else None
        return b"".join(self.events.delta(d) for d in self.hold.release(choice.stage, written)[0])

    def _written_as(self, text: str) -> list:
        """The logprob entries of the held `text` a call that never became JSON is answered with (what the
        model wrote after the text sent before the calls were held)."""
        return self.text_logprobs.written_as(text, self._sent_entries)

    def _failure(self, exc: ApiError) -> bytes:
        """An error after the stream started, as the Responses API streams one: an `error` event, then
        `response.failed` with the response so far and its error."""
        out = self.events.event("error", code=exc.code, message=exc.message, param=exc.param)
        failed = self._body(self._response("failed", self.events.output(), self._usage()))
        failed["error"] = {"code": _FAILED_CODES.get(exc.status, "server_error"), "message": exc.message,
                           "param": exc.param, "type": exc.type}
        return out + self.events.event("response.failed", response=failed)


def _prepare(rreq: ResponsesRequest, store: ResponseStore | None, history: list[ChatMessage],
             scope: dict) -> tuple[ChatCompletionRequest, RoutingHints, bool]:
    """The chat request a Responses one runs as, checked (inside its count in the request metrics: a
    refusal here is one, an unknown `item_reference` or `previous_response_id` too), its routing hints and
    whether its next turn is prefilled. `history` is filled with the conversation it continues (the run's)."""
    rreq.input = resolved_input(store, rreq.input)
    history[:] = previous_conversation(store, rreq.previous_response_id)
    req = rreq.to_chat(history)
    validate_chat(req)
    hints = routing_hints(req.nvext, scope["headers"], background=scope.get(BACKGROUND, False))
    return req, hints, speculative_prefill.wanted(req.nvext)


def _fit(rreq: ResponsesRequest) -> ConversationFit | None:
    """What shortens the request's conversation to the context, where it asks for that."""
    return ConversationFit() if rreq.truncation == "auto" else None


class ResponsesApi:
    """The Responses routes a frontend serves, over its own request path: `POST /v1/responses`;
    `POST /v1/responses/input_tokens` (the prompt's token count as the model will see it, template
    and tools included, answered as OpenAI does: `{"object": "response.input_tokens", "input_tokens"}`);
    and, over the stored responses (`responses_store`), `GET` / `DELETE /v1/responses/{id}` and
    `GET /v1/responses/{id}/input_items`."""

    def __init__(self, store: ResponseStore | None = None) -> None:
        self.store = store

    def routes(self, app) -> dict[tuple[str, str], Any]:
        return {("POST", "/v1/responses"): partial(self.create, app),
                ("POST", "/v1/responses/input_tokens"): partial(self.input_tokens, app)}

    def prefix_routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", PREFIX, self.retrieve), ("DELETE", PREFIX, self.delete)]

    async def create(self, app, scope, receive, send) -> None:
        app.admission.refuse_if_draining()
        body = await app.request_body(scope, receive)
        rreq = decode_responses(body)
        if await forwarded(self.store, rreq.previous_response_id, scope, body, send, receive):
            return  # it continues a response another replica made: that one ran it
        history: list[ChatMessage] = []  # filled by _prepare
        fit = _fit(rreq)
        with own_names():  # refusals before the answer starts (bad fields, a prompt over the context)
            await app.generate(rreq, "responses", len(body), receive, send, ResponsesRun,
                               trace=scope.get(SCOPE_KEY), prepare=partial(_prepare, rreq, self.store, history, scope),
                               fit=fit, truncated=fit, responses_req=rreq, history=history, store=self.store)

    async def input_tokens(self, app, scope, receive, send) -> None:
        body = await app.request_body(scope, receive)
        rreq = decode_responses(body)
        if await forwarded(self.store, rreq.previous_response_id, scope, body, send, receive):
            return
        rreq.input = resolved_input(self.store, rreq.input)
        history = previous_conversation(self.store, rreq.previous_response_id)
        with own_names():
            count = await app.prompt_tokens(rreq.to_chat(history), len(body), _fit(rreq))
        await send_json(send, 200, {"object": "response.input_tokens", "input_tokens": count})

    async def retrieve(self, scope, receive, send) -> None:
        response_id = scope["path"][len(PREFIX):]
        listing = response_id.endswith(INPUT_ITEMS_SUFFIX)
        response_id = response_id[:-len(INPUT_ITEMS_SUFFIX)] if listing else response_id
        stored = self.store.get(response_id) if self.store is not None else None
        if stored is None:
            if await forwarded(self.store, response_id, scope, b"", send, receive):
                return
            raise not_found(response_id)
        if not listing:
            await send_json(send, 200, stored.response)
            return
        items = stored.input_items if b"order=asc" in scope.get("query_string", b"") else stored.input_items[::-1]
        await send_json(send, 200, item_list(items))  # OpenAI lists them newest first unless order=asc

    async def delete(self, scope, receive, send) -> None:
        response_id = scope["path"][len(PREFIX):]
        if self.store is None or not self.store.delete(response_id):
            if await forwarded(self.store, response_id, scope, b"", send, receive):
                return
            raise not_found(response_id)
        await send_json(send, 200, {"id": response_id, "object": "response", "deleted": True})

"""`/v1/responses` (OpenAI Responses API) over the chat pipeline: the request converts
itself to a chat request (input items -> messages, Responses tools -> chat tools), the
same output stage runs, and the result is framed as a Response object or as Dynamo's
event sequence:

    response.created, response.in_progress, response.output_item.added,
    response.content_part.added, response.output_text.delta x N, response.output_text.done,
    response.content_part.done, response.output_item.done, response.completed | response.incomplete

Function calls stream as `response.function_call_arguments.delta` inside their own
output item; reasoning as `response.reasoning_text.delta` in a reasoning item.
A function call is one whose arguments became JSON, as on chat: one that did not
(cut off, malformed) is answered as the text the model wrote; a stream holds its
calls back until the answer is complete to end the same way (`HeldCalls`).
Stopping at `max_output_tokens` gives `status: "incomplete"`, and the item it cut
(the last; a call's arguments, JSON, are whole) is `incomplete` too. An error after
the stream started is an `error` event and `response.failed`.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import msgspec

from dynamo.frontend import speculative_prefill
from dynamo.frontend.errors import ApiError
from dynamo.frontend.choices import Choice, HeldCalls
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.openai import ChatCompletionRequest, ChatMessage
from dynamo.frontend.responses_truncation import ConversationFit
from dynamo.frontend.responses_request import ResponsesRequest, decode_responses, input_messages, own_names
from dynamo.frontend.responses_store import (INPUT_ITEMS_SUFFIX, PREFIX, RESPONSE_PREFIX, ResponseStore,
                                             StoredResponse, forwarded, input_items, item_list, not_found,
                                             previous_conversation)
from dynamo.frontend.validation import validate_chat
from dynamo.frontend.output import ChoiceDelta, is_json
from dynamo.frontend.request_log import SCOPE_KEY
from dynamo.frontend.inprocess import BACKGROUND
from dynamo.frontend.replicas import new_id
from dynamo.frontend.routing_hints import routing_hints
from dynamo.frontend.sse import SSE_HEADERS, named_event
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
        self.seq = 0
        self.items: list[dict] = []  # output items, in order
        self.open: dict[str, dict] = {}  # "reasoning" / "message" / call index -> its open item
        self.hold = HeldCalls(is_json)

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
                "metadata": self.rreq.metadata or {}, "text": {"format": {"type": "text"}},
                "previous_response_id": self.rreq.previous_response_id, "store": self.store is not None,
                "truncation": self.rreq.truncation or "disabled",
                "usage": usage, "_finish": choice.finish}

    def _usage(self) -> dict:
        u = super()._usage()
        return {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                "total_tokens": u["total_tokens"], "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens_details": {"reasoning_tokens": 0}}

    def answer_history(self) -> list[ChatMessage]:
        """The output items as the client's next turn sends them back in its input, converted as that
        input will be (reasoning items dropped, each function call its own assistant message)."""
        return input_messages(self.items)

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

    async def _unary(self, merged, first, send) -> None:
        if not await self._collect_answers(merged, first):
            return
        choice = self.choices[0]
        status = self._status(choice)
        # The chat answer: a call whose arguments are not JSON is its text.
        items = answer_items(self._chat_message(choice), self.reasoning_field, status == "incomplete")
        self.items = items
        body = self._body(self._response(status, items, self._usage()))
        self._save(body)
        await send_bytes(send, 200, _json(body))

    # -- streaming -----------------------------------------------------------------------------
    def _event(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return named_event(kind, payload)

    def _add_item(self, key: str, item: dict) -> bytes:
        item["_index"] = len(self.items)
        self.items.append(item)
        self.open[key] = item
        out = self._event("response.output_item.added", output_index=item["_index"], item=_public(item))
        if item["type"] == "message":
            out += self._event("response.content_part.added", item_id=item["id"], output_index=item["_index"],
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []})
        return out

    def _close_item(self, key: str, cut: bool = False) -> bytes:
        """The item's closing events; `cut`: the token limit ended it."""
        item = self.open.pop(key)
        idx, out = item["_index"], b""
        if item["type"] == "message":
            text = item["content"][0]["text"]
            out += self._event("response.output_text.done", item_id=item["id"], output_index=idx, content_index=0,
                               text=text)
            out += self._event("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0,
                               part=item["content"][0])
        elif item["type"] == "function_call":
            out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                               arguments=item["arguments"])
        elif item["type"] == "reasoning":
            out += self._event("response.reasoning_text.done", item_id=item["id"], output_index=idx,
                               content_index=0, text=item["content"][0]["text"])
        item["status"] = "completed"
        if cut:
            _cut(item)
        return out + self._event("response.output_item.done", output_index=idx, item=_public(item))

    def _delta_events(self, d: ChoiceDelta) -> bytes:
        out = b""
        if d.reasoning:
            if "reasoning" not in self.open:
                out += self._add_item("reasoning", _reasoning_item("", "in_progress"))
            item = self.open["reasoning"]
            item["content"][0]["text"] += d.reasoning
            out += self._event("response.reasoning_text.delta", item_id=item["id"], output_index=item["_index"],
                               content_index=0, delta=d.reasoning)
        if (d.content or d.tool_calls) and "reasoning" in self.open:
            out += self._close_item("reasoning")
        if d.content:
            if "message" not in self.open:
                out += self._add_item("message", _message_item("", "in_progress"))
            item = self.open["message"]
            item["content"][0]["text"] += d.content
            out += self._event("response.output_text.delta", item_id=item["id"], output_index=item["_index"],
                               content_index=0, delta=d.content)
        for call in d.tool_calls:
            key = f"call{call.index}"
            if key not in self.open:
                out += self._add_item(key, _call_item(call.id or "", call.name or "", "", "in_progress"))
            item = self.open[key]
            item["arguments"] += call.arguments
            if call.arguments:
                out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                                   output_index=item["_index"], delta=call.arguments)
        return out

    async def _stream(self, merged, first, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        created = self._body(self._response("in_progress", [], None))
        head = self._event("response.created", response=created) + self._event("response.in_progress",
                                                                              response=created)
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
            body += b"".join(self._delta_events(d) for d in self.hold.release(choice.stage)[0])
            if not self.items:
                body += self._add_item("message", _message_item("", "in_progress"))
            status = self._status(choice)
            last = self.items[-1]  # always open: only reasoning closes early, when an item follows it
            for key in list(self.open):
                body += self._close_item(key, cut=status == "incomplete" and self.open[key] is last)
            final = self._body(self._response(status, [_public(i) for i in self.items], self._usage()))
            self._save(final)
            body += self._event(f"response.{status}", response=final)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except ApiError as exc:
            if self.cancelled:
                return
            await send({"type": "http.response.body", "body": self._failure(exc), "more_body": False})

    def _sent(self, d: ChoiceDelta) -> bytes:
        """The delta's events, or none while the answer's calls are held back."""
        sent = self.hold.take(d)
        return self._delta_events(sent) if sent is not None else b""

    def _failure(self, exc: ApiError) -> bytes:
        """An error after the stream started, as the Responses API streams one: an `error` event, then
        `response.failed` with the response so far and its error."""
        out = self._event("error", code=exc.code, message=exc.message, param=exc.param)
        failed = self._body(self._response("failed", [_public(i) for i in self.items], self._usage()))
        failed["error"] = {"code": _FAILED_CODES.get(exc.status, "server_error"), "message": exc.message,
                           "param": exc.param, "type": exc.type}
        return out + self._event("response.failed", response=failed)


def answer_items(message: dict, reasoning_field: str, incomplete: bool) -> list[dict]:
    """The output items of a chat answer `message`; `incomplete`: the token limit ended it."""
    items: list[dict] = []
    reasoning = message.get(reasoning_field)
    if reasoning:
        items.append(_reasoning_item(reasoning))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        items.append(_message_item(message.get("content") or ""))
    for call in calls:
        items.append(_call_item(call["id"], call["function"]["name"], call["function"]["arguments"]))
    if incomplete:
        _cut(items[-1])
    return items


def _cut(item: dict) -> None:
    """The token limit ended the answer in this item: `incomplete`, unless it is a call (whose arguments,
    JSON by then, are whole)."""
    if item["type"] != "function_call":
        item["status"] = "incomplete"


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _message_item(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _reasoning_item(text: str, status: str = "completed") -> dict:
    return {"type": "reasoning", "id": "rs_" + uuid.uuid4().hex, "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_" + uuid.uuid4().hex, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def _prepare(rreq: ResponsesRequest, history, scope: dict) -> tuple[ChatCompletionRequest, RoutingHints, bool]:
    """The chat request a Responses one runs as, checked (inside its count in the request metrics: a
    refusal here is one), its routing hints and whether its next turn is prefilled."""
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
        history = previous_conversation(self.store, rreq.previous_response_id)
        fit = _fit(rreq)
        with own_names():  # refusals before the answer starts (bad fields, a prompt over the context)
            await app.generate(rreq, "responses", len(body), receive, send, ResponsesRun,
                               trace=scope.get(SCOPE_KEY), prepare=partial(_prepare, rreq, history, scope), fit=fit,
                               truncated=fit,
                               responses_req=rreq, history=history, store=self.store)

    async def input_tokens(self, app, scope, receive, send) -> None:
        body = await app.request_body(scope, receive)
        rreq = decode_responses(body)
        if await forwarded(self.store, rreq.previous_response_id, scope, body, send, receive):
            return
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

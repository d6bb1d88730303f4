"""`/v1/messages`, the answer side: a chat generation framed as an Anthropic Message, unary or as
Anthropic's event stream:

    message_start, ping,
    (content_block_start, content_block_delta x N, content_block_stop) per block,
    message_delta (stop_reason, stop_sequence, usage), message_stop

Blocks come in the order the model produced them: `thinking` (the parsed reasoning; `thinking_delta`s,
then an empty `signature_delta`: there is no signature to give), `text` (`text_delta`), and one
`tool_use` block per tool call (`input_json_delta`s of its arguments). A tool call is only one the
client can run: its arguments a complete JSON object (Anthropic's `input` is always one). An answer
with a call that is not (cut off by `max_tokens`, not JSON, `null`, a list) is answered as the text
the model wrote, as chat answers a call that never became JSON. A stream cannot take back what it
sent, so from its first call on it holds everything back until the answer is complete, and then
sends the rest as the unary answer has it (thinking, text, tool_use blocks; or that text). `stop_reason` is
`max_tokens` when the answer ran out, `tool_use` when it calls tools, `stop_sequence` (naming it)
when one of the request's stop sequences ended it, else `end_turn`. Usage follows Anthropic's
accounting: the prompt tokens served from the KV cache are `cache_read_input_tokens`, the rest
`input_tokens`. An error after the stream started is an `error` event.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import msgspec

from dynamo.frontend.anthropic import COUNT_TOKENS_PATH, PATH, MessagesRequest, decode_messages, error_body
from dynamo.frontend.errors import ApiError
from dynamo.frontend.choices import Choice, HeldCalls, text_first
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.validation import validate_chat
from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.request_log import SCOPE_KEY
from dynamo.frontend.routing_hints import routing_hints
from dynamo.frontend.sse import SSE_HEADERS, named_event
from dynamo.llm.protocol import FinishReason
from dynamo.runtime.asgi import send_bytes, send_json

_json = msgspec.json.encode


class MessagesRun(GenerationRun):
    """A chat generation framed as an Anthropic Message (one choice)."""

    def __init__(self, *args, messages_req: MessagesRequest, **kw) -> None:
        super().__init__(*args, **kw)
        self.mreq = messages_req
        self.message_id = "msg_" + uuid.uuid4().hex
        self.block = -1  # index of the block open in the stream, -1 before the first
        self.open: Any = None  # "thinking", "text" or a tool call's index: what the open block holds
        self.called = False  # the stream sent tool_use blocks
        self.hold = HeldCalls(lambda arguments: tool_input(arguments) is not None)

    @classmethod
    def for_card(cls, req, entry, *, messages_req: MessagesRequest, **kw):
        """The Message's thinking budget, where the card served now can enforce one (it names a reasoning parser
        whose tags the tokenizer has): decided each time the request is prepared, for the card it is prepared for."""
        budget = messages_req.thinking_budget()
        if budget is None or entry.think_markers is None:
            return req
        return msgspec.structs.replace(req, nvext={"max_thinking_tokens": budget, **(req.nvext or {})})

    # -- the Message ---------------------------------------------------------------------------
    def _message(self, content: list[dict], stop_reason: str | None, stop_sequence: str | None) -> dict:
        return {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                "usage": self._anthropic_usage()}

    def _anthropic_usage(self) -> dict:
        prompt = self.prompt_tokens
        cached = min(self.cached_tokens, prompt)
        return {"input_tokens": prompt - cached, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cached, "output_tokens": self.completion_tokens}

    def _stop(self, choice: Choice, calls: bool) -> tuple[str, str | None]:
        """(stop_reason, stop_sequence) of the finished answer: the limit first, as chat's finish_reason."""
        if choice.finish == FinishReason.LENGTH:
            return "max_tokens", None
        if calls:
            return "tool_use", None
        matched = choice.stage.matched_stop or choice.stop_reason
        if isinstance(matched, str) and matched in (self.mreq.stop_sequences or ()):
            return "stop_sequence", matched
        return "end_turn", None

    async def _unary(self, merged, first, send) -> None:
        if not await self._collect_answers(merged, first):
            return
        choice = self.choices[0]
        # the chat answer, its calls as the chat stream sent them: `answer_blocks` applies Anthropic's rule to them
        message = self._chat_message(choice)
        content, calls = answer_blocks(message, self.reasoning_field, choice.stage.tool_input_text(),
                                       text_first(choice.content, choice.reasoning))
        await send_bytes(send, 200, _json(self._message(content, *self._stop(choice, calls))))

    # -- streaming -----------------------------------------------------------------------------
    @staticmethod
    def _event(kind: str, **fields) -> bytes:
        return named_event(kind, {"type": kind, **fields})

    def _start_block(self, holds: Any, block: dict) -> bytes:
        out = self._close_block()
        self.block += 1
        self.open = holds
        return out + self._event("content_block_start", index=self.block, content_block=block)

    def _close_block(self) -> bytes:
        if self.open is None:
            return b""
        out = b""
        if self.open == "thinking":
            out = self._delta({"type": "signature_delta", "signature": ""})
        self.open = None
        return out + self._event("content_block_stop", index=self.block)

    def _delta(self, delta: dict) -> bytes:
        return self._event("content_block_delta", index=self.block, delta=delta)

    def _delta_events(self, d: ChoiceDelta) -> bytes:
        out = b""
        if d.reasoning:
            if self.open != "thinking":
                out += self._start_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta({"type": "thinking_delta", "thinking": d.reasoning})
        if d.content:
            if self.open != "text":
                out += self._start_block("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": d.content})
        for call in d.tool_calls:
            if self.open != ("call", call.index):
                block = {"type": "tool_use", "id": call.id or "toolu_" + uuid.uuid4().hex, "name": call.name or "",
                         "input": {}}
                out += self._start_block(("call", call.index), block)
            if call.arguments:
                out += self._delta({"type": "input_json_delta", "partial_json": call.arguments})
        return out

    def _sent_or_held(self, d: ChoiceDelta) -> bytes:
        sent = self.hold.take(d)
        return self._delta_events(sent) if sent is not None else b""

    def _release(self, choice: Choice) -> bytes:
        deltas, self.called = self.hold.release(choice.stage)
        return b"".join(self._delta_events(d) for d in deltas)

    async def _stream(self, merged, first, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        choice, started = self.choices[0], False
        try:
            async for _, outputs in self._batches(merged, first):
                body = b"" if choice.done else self._sent_or_held(self._absorb(choice, outputs))
                if not started:  # after the first batch: its usage knows the cached prompt tokens
                    started = True
                    body = self._opening() + body
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            body = (b"" if started else self._opening()) + self._sent_or_held(choice.stage.finish())
            body += self._release(choice)
            if self.block < 0:
                body += self._start_block("text", {"type": "text", "text": ""})
            body += self._close_block()
            stop_reason, stop_sequence = self._stop(choice, self.called)
            body += self._event("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                usage=self._anthropic_usage())
            body += self._event("message_stop")
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except ApiError as exc:
            if self.cancelled:
                return
            await send({"type": "http.response.body", "body": self._event("error", error=error_body(exc)["error"]),
                        "more_body": False})

    def _opening(self) -> bytes:
        start = self._message([], None, None)
        start["usage"]["output_tokens"] = 0
        return self._event("message_start", message=start) + self._event("ping")


def answer_blocks(message: dict, reasoning_field: str, written: str,
                  text_first: bool = False) -> tuple[list[dict], bool]:
    """(content blocks, whether they call tools) of a chat answer `message`; `written`: the text the model
    wrote, the answer when a call's arguments are JSON but no object (no call either); `text_first`: its
    text began before its reasoning and comes first, as the stream sends it (`choices.text_first`)."""
    content: list[dict] = []
    reasoning = message.get(reasoning_field)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    calls = message.get("tool_calls") or []
    inputs = [tool_input(call["function"]["arguments"]) for call in calls]
    text = message.get("content")
    if any(i is None for i in inputs):
        text, calls = written, []
    if text or not calls:
        content.insert(0 if text_first else len(content), {"type": "text", "text": text or ""})
    for call, input_ in zip(calls, inputs):
        content.append({"type": "tool_use", "id": call["id"] or "toolu_" + uuid.uuid4().hex,
                        "name": call["function"]["name"], "input": input_})
    return content, bool(calls)


def tool_input(arguments: str) -> dict | None:
    """A call's arguments as a tool_use block's `input`; None when they are no JSON object (no call)."""
    try:
        value = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class AnthropicApi:
    """The routes a frontend serves under `--enable-anthropic-api`, over its own request path."""

    def __init__(self, strip_preamble: bool) -> None:
        self.strip_preamble = strip_preamble

    def routes(self, app) -> dict[tuple[str, str], Any]:
        return {("POST", PATH): partial(self.messages, app), ("POST", COUNT_TOKENS_PATH): partial(self.count_tokens, app)}

    async def messages(self, app, scope, receive, send) -> None:
        app.admission.refuse_if_draining()
        body = await app.request_body(scope, receive)
        mreq = decode_messages(body)
        await app.generate(mreq, "messages", len(body), receive, send, MessagesRun, trace=scope.get(SCOPE_KEY),
                           prepare=partial(self._prepare, app, mreq, scope), messages_req=mreq)

    def _prepare(self, app, mreq: MessagesRequest, scope: dict):
        """The chat request a Messages one runs as, checked inside its count in the request metrics (a
        refusal here is one), with its routing hints; no next turn is prefilled."""
        req = mreq.to_chat(self.strip_preamble)
        validate_chat(req)  # its thinking budget depends on the card: `MessagesRun.for_card`
        return req, routing_hints(req.nvext, scope["headers"]), False

    async def count_tokens(self, app, scope, receive, send) -> None:
        """The prompt's token count as the model will see it: template, tools and all."""
        body = await app.request_body(scope, receive)
        req = decode_messages(body).to_chat(self.strip_preamble, counting=True)
        await send_json(send, 200, {"input_tokens": await app.prompt_tokens(req, len(body))})

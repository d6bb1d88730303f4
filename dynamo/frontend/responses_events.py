"""A Responses answer's output items (`responses.py` runs the generation and frames the Response): the
items of a whole chat answer (`answer_items`), and a stream's deltas as the Responses API's events
(`OutputEvents`), numbered by `sequence_number`. As OpenAI streams them, items come one at a time: each
is closed before the next opens, so a client that acts on `response.output_item.done` (runs a call)
sees each item whole, in order:

    response.output_item.added, [response.content_part.added],
    response.output_text.delta | response.function_call_arguments.delta | response.reasoning_text.delta x N,
    response.output_text.done | response.function_call_arguments.done | response.reasoning_text.done,
    [response.content_part.done], response.output_item.done

Text events carry `logprobs` (the text's token logprobs where the request asked for them, else `[]`:
`responses_logprobs`), a call's `done` its function's `name`, as the Responses schema requires.
"""

from __future__ import annotations

import uuid
from typing import Callable

from dynamo.frontend.logprob_json import Entry, TokenLogprob
from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.responses_logprobs import event_logprobs
from dynamo.frontend.sse import named_event

Render = Callable[[list[Entry]], list[TokenLogprob]]  # logprob entries as an output_text part's `logprobs`
_NONE: list = []  # a text event's `logprobs` when it has none (shared: only ever encoded, never changed)


class OutputEvents:
    """A stream's output items and the events that open, fill and close them; at most one is open."""

    def __init__(self, logprobs: Render | None = None) -> None:
        self.logprobs = logprobs  # renders a delta's text logprobs (None: not asked for)
        self.seq = 0
        self.items: list[dict] = []  # output items, in order; `_index` is each one's output_index
        self.open: dict | None = None  # the item the last delta went to, until another opens
        self.key: str | int | None = None  # what the open item holds: "reasoning", "message" or a call's index

    def event(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return named_event(kind, payload)

    def delta(self, d: ChoiceDelta) -> bytes:
        """The events of one delta: its reasoning, its text, its calls, each in its own item."""
        out = b""
        if d.reasoning:
            item, out = self._item("reasoning", _reasoning_item, out)
            item["content"][0]["text"] += d.reasoning
            out += self.event("response.reasoning_text.delta", item_id=item["id"], output_index=item["_index"],
                              content_index=0, delta=d.reasoning)
        if d.content:
            item, out = self._item("message", _message_item, out)
            part = item["content"][0]
            part["text"] += d.content
            logprobs = _NONE
            if self.logprobs is not None and d.logprobs:
                parts = self.logprobs(d.logprobs)
                part["logprobs"] += parts
                logprobs = event_logprobs(parts)
            out += self.event("response.output_text.delta", item_id=item["id"], output_index=item["_index"],
                              content_index=0, delta=d.content, logprobs=logprobs)
        for call in d.tool_calls:
            item, out = self._item(call.index, _call_item, out, call.id or "", call.name or "")
            item["arguments"] += call.arguments
            if call.arguments:
                out += self.event("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=item["_index"], delta=call.arguments)
        return out

    def finish(self, incomplete: bool) -> bytes:
        """The last item's closing (an empty message first when nothing was said); `incomplete`: the token
        limit cut it."""
        out = b"" if self.items else self._item("message", _message_item, b"")[1]
        return out + self.close(cut=incomplete)

    def output(self) -> list[dict]:
        """The items as the Response lists them."""
        return [public(item) for item in self.items]

    def _item(self, key: str | int, new: Callable[..., dict], out: bytes, *fields: str) -> tuple[dict, bytes]:
        """The open item for `key`, and `out` with its events: the one open, or, once that one is closed, a
        new one (`new(*fields, text, status)`)."""
        if self.key == key and self.open is not None:
            return self.open, out
        out += self.close()
        item = new(*fields, "", "in_progress")
        item["_index"] = len(self.items)
        self.items.append(item)
        self.open, self.key = item, key
        out += self.event("response.output_item.added", output_index=item["_index"], item=public(item))
        if item["type"] == "message":
            out += self.event("response.content_part.added", item_id=item["id"], output_index=item["_index"],
                              content_index=0, part=_output_text(""))
        return item, out

    def close(self, cut: bool = False) -> bytes:
        """The open item's closing events (none when none is open); `cut`: the token limit ended it."""
        item, self.open, self.key = self.open, None, None
        if item is None:
            return b""
        idx, out = item["_index"], b""
        if item["type"] == "message":
            part = item["content"][0]
            out += self.event("response.output_text.done", item_id=item["id"], output_index=idx, content_index=0,
                              text=part["text"], logprobs=event_logprobs(part["logprobs"]) if part["logprobs"] else _NONE)
            out += self.event("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0,
                              part=part)
        elif item["type"] == "function_call":
            out += self.event("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                              name=item["name"], arguments=item["arguments"])
        elif item["type"] == "reasoning":
            out += self.event("response.reasoning_text.done", item_id=item["id"], output_index=idx,
                              content_index=0, text=item["content"][0]["text"])
        item["status"] = "completed"
        if cut:
            _cut(item)
        return out + self.event("response.output_item.done", output_index=idx, item=public(item))


def answer_items(message: dict, reasoning_field: str, incomplete: bool, text_first: bool = False,
                 logprobs: list[TokenLogprob] | None = None) -> list[dict]:
    """The output items of a chat answer `message`: its reasoning, text and calls (`text_first`: its text
    began before its reasoning, and comes first, as a stream sends it; `choices.text_first`); `incomplete`:
    the token limit ended it; `logprobs`: its text's, where they were asked for."""
    items: list[dict] = []
    reasoning = message.get(reasoning_field)
    if reasoning:
        items.append(_reasoning_item(reasoning))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        text = _message_item(message.get("content") or "")
        text["content"][0]["logprobs"] = logprobs or []
        items.insert(0 if text_first else len(items), text)
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


def public(item: dict) -> dict:
    """The item without the stream's own bookkeeping (`_index`)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": status, "role": "assistant",
            "content": [_output_text(text)]}


def _reasoning_item(text: str, status: str = "completed") -> dict:
    return {"type": "reasoning", "id": "rs_" + uuid.uuid4().hex, "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {"type": "function_call", "id": "fc_" + uuid.uuid4().hex, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}

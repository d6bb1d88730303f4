"""OpenAI response bodies: streamed SSE chunks and the folded non-streaming answer.

The per-chunk JSON is assembled from byte templates computed once per request, so a
streamed chunk costs one JSON string escape plus a concatenation (the per-token path
is where Python HTTP stacks lose; see shared/reference/python-http-streaming.md).
"""

from __future__ import annotations

import msgspec

from dynamo.llm.protocol import FinishReason

_json = msgspec.json.encode

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

# The engine's reason -> OpenAI's `finish_reason` ("cancelled" and "error" are Dynamo's additions).
FINISH_REASONS = {
    FinishReason.EOS: "stop", FinishReason.STOP: "stop", FinishReason.LENGTH: "length",
    FinishReason.CANCELLED: "cancelled", FinishReason.ERROR: "error", FinishReason.CONTENT_FILTER: "content_filter",
}


def openai_finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    try:
        return FINISH_REASONS[FinishReason(reason)]
    except ValueError:  # a reason this version does not know: shown as the worker sent it
        return reason


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class _Chunks:
    """What chat and completion streams share: the per-request envelope and the chunks with no choice."""

    __slots__ = ("_head", "_envelope")
    OBJECT = b""  # the chunks' "object"

    def __init__(self, request_id: str, model: str, created: int) -> None:
        envelope = (b'{"id":' + _json(request_id) + b',"object":"' + self.OBJECT + b'","created":'
                    + str(created).encode() + b',"model":' + _json(model))
        self._envelope = envelope
        self._head = b"data: " + envelope + b',"choices":[{"index":'

    def usage(self, usage: dict) -> bytes:
        return b"data: " + self._envelope + b',"choices":[],"usage":' + _json(usage) + b"}\n\n"

    def extension(self, nvext: dict) -> bytes:
        """The response's `nvext` (nvext.extra_fields), in a chunk of its own before [DONE]."""
        return b"data: " + self._envelope + b',"choices":[],"nvext":' + _json(nvext) + b"}\n\n"


class ChatChunks(_Chunks):
    __slots__ = ()
    OBJECT = b"chat.completion.chunk"

    def _open(self, index: int) -> bytes:
        return self._head + (b"0" if index == 0 else str(index).encode()) + b',"delta":{'

    def content(self, text: str, first: bool = False, index: int = 0) -> bytes:
        role = b'"role":"assistant",' if first else b""
        return (self._open(index) + role + b'"content":' + _json(text)
                + b'},"logprobs":null,"finish_reason":null}]}\n\n')

    def delta(self, index: int, delta: dict, logprobs: dict | None = None) -> bytes:
        """Any delta (reasoning, tool calls, logprobs); `content()` is the plain-text fast path."""
        return (self._open(index) + _json(delta)[1:-1] + b'},"logprobs":' + _json(logprobs)
                + b',"finish_reason":null}]}\n\n')

    def finish(self, reason: str, first: bool = False, index: int = 0) -> bytes:
        role = b'"role":"assistant","content":""' if first else b""
        return self._open(index) + role + b'},"logprobs":null,"finish_reason":' + _json(reason) + b"}]}\n\n"


class CompletionChunks(_Chunks):
    __slots__ = ()
    OBJECT = b"text_completion"

    def _open(self, index: int) -> bytes:
        return self._head + (b"0" if index == 0 else str(index).encode()) + b',"text":'

    def content(self, text: str, first: bool = False, index: int = 0, logprobs: dict | None = None) -> bytes:
        return self._open(index) + _json(text) + b',"logprobs":' + _json(logprobs) + b',"finish_reason":null}]}\n\n'

    def finish(self, reason: str, first: bool = False, index: int = 0) -> bytes:
        return self._open(index) + b'"","logprobs":null,"finish_reason":' + _json(reason) + b"}]}\n\n"


def named_event(name: str, payload: dict) -> bytes:
    """One SSE event with its `event:` name line (Anthropic's, Responses' and the dispatch events)."""
    return b"event: " + name.encode() + b"\ndata: " + _json(payload) + b"\n\n"


def error_event(body: dict) -> bytes:
    return b"data: " + _json(body) + b"\n\n"


def chat_response(request_id: str, model: str, created: int, text: str, finish: str | None, usage: dict) -> bytes:
    return _json({
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish}],
        "usage": usage,
    })


def completion_response(request_id: str, model: str, created: int, text: str, finish: str | None,
                        usage: dict) -> bytes:
    return _json({
        "id": request_id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    })


def chat_body(request_id: str, model: str, created: int, choices: list[dict], usage: dict,
              nvext: dict | None = None) -> bytes:
    return _body("chat.completion", request_id, model, created, choices, usage, nvext)


def completion_body(request_id: str, model: str, created: int, choices: list[dict], usage: dict,
                    nvext: dict | None = None) -> bytes:
    return _body("text_completion", request_id, model, created, choices, usage, nvext)


def _body(kind: str, request_id: str, model: str, created: int, choices: list[dict], usage: dict,
          nvext: dict | None) -> bytes:
    body = {"id": request_id, "object": kind, "created": created, "model": model, "choices": choices, "usage": usage}
    if nvext is not None:
        body["nvext"] = nvext
    return _json(body)


def tool_call_entries(deltas) -> list[dict]:
    """Streamed tool-call deltas as OpenAI `delta.tool_calls` entries, adjacent pieces of
    one call merged (the first piece of a call carries id, type and name)."""
    out: list[dict] = []
    for d in deltas:
        if out and out[-1]["index"] == d.index and d.id is None:
            out[-1]["function"]["arguments"] += d.arguments
            continue
        entry: dict = {"index": d.index, "function": {"arguments": d.arguments}}
        if d.id is not None:
            entry = {"index": d.index, "id": d.id, "type": "function",
                     "function": {"name": d.name, "arguments": d.arguments}}
        out.append(entry)
    return out


def chat_logprobs(entries, token_text) -> dict:
    """Chat `logprobs.content` from (token id, logprob, top [(id, logprob)] | None) triples."""
    def one(tid: int, lp: float) -> dict:
        text = token_text(tid)
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    content = []
    for tid, lp, top in entries:
        item = one(tid, lp)
        item["top_logprobs"] = [one(t, v) for t, v in top] if top else []
        content.append(item)
    return {"content": content}


def completion_logprobs(entries, token_text, offset: int) -> dict:
    """Completions `logprobs` (tokens, token_logprobs, top_logprobs, text_offset); `offset`
    is the text length before these tokens."""
    tokens, lps, tops, offsets = [], [], [], []
    for tid, lp, top in entries:
        text = token_text(tid)
        tokens.append(text)
        lps.append(lp)
        tops.append({token_text(t): v for t, v in top} if top else None)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

"""OpenAI response bodies: streamed SSE chunks and the folded non-streaming answer.

The per-chunk JSON is assembled from byte templates computed once per request, so a
streamed chunk costs one JSON string escape plus a concatenation (the per-token path
is where Python HTTP stacks lose; see shared/reference/python-http-streaming.md).
"""

from __future__ import annotations

import msgspec

_json = msgspec.json.encode

DONE = b"data: [DONE]\n\n"

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "cancelled", "error": "error"}


def openai_finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    return FINISH_REASONS.get(reason, reason)


def usage_dict(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class ChatChunks:
    __slots__ = ("_head", "_tail", "_envelope")

    def __init__(self, request_id: str, model: str, created: int) -> None:
        envelope = (b'{"id":' + _json(request_id) + b',"object":"chat.completion.chunk","created":'
                    + str(created).encode() + b',"model":' + _json(model))
        self._envelope = envelope
        self._head = b"data: " + envelope + b',"choices":[{"index":0,"delta":{'
        self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def content(self, text: str, first: bool = False) -> bytes:
        role = b'"role":"assistant",' if first else b""
        return self._head + role + b'"content":' + _json(text) + self._tail

    def finish(self, reason: str, first: bool = False) -> bytes:
        role = b'"role":"assistant","content":""' if first else b""
        return self._head + role + b'},"logprobs":null,"finish_reason":' + _json(reason) + b"}]}\n\n"

    def usage(self, usage: dict) -> bytes:
        return b"data: " + self._envelope + b',"choices":[],"usage":' + _json(usage) + b"}\n\n"


class CompletionChunks:
    __slots__ = ("_head", "_envelope")

    def __init__(self, request_id: str, model: str, created: int) -> None:
        envelope = (b'{"id":' + _json(request_id) + b',"object":"text_completion","created":'
                    + str(created).encode() + b',"model":' + _json(model))
        self._envelope = envelope
        self._head = b"data: " + envelope + b',"choices":[{"index":0,"text":'

    def content(self, text: str, first: bool = False) -> bytes:
        return self._head + _json(text) + b',"logprobs":null,"finish_reason":null}]}\n\n'

    def finish(self, reason: str, first: bool = False) -> bytes:
        return self._head + b'"","logprobs":null,"finish_reason":' + _json(reason) + b"}]}\n\n"

    def usage(self, usage: dict) -> bytes:
        return b"data: " + self._envelope + b',"choices":[],"usage":' + _json(usage) + b"}\n\n"


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

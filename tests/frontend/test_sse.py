"""SSE framing and response bodies (dynamo/frontend/sse.py), checked against the official
`openai` client's own response models, with no server."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion import Completion as CompletionChunk

from dynamo.frontend.sse import (DONE, ChatChunks, CompletionChunks, chat_response, completion_response, error_event,
                                 openai_finish_reason, usage_dict)

NASTY = 'quote " backslash \\ newline \n tab \t nul \x00 emoji \U0001F600 </script> data: [DONE]'


def events(body: bytes) -> list[bytes]:
    """Split an SSE body into event payloads, checking the framing as a client does."""
    assert body.endswith(b"\n\n")
    out = []
    for block in body.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        assert len(lines) == 1, f"one data line per event: {block!r}"  # JSON never spans lines
        assert lines[0].startswith(b"data: ")
        out.append(lines[0][len(b"data: "):])
    return out


@pytest.mark.parametrize("first", [True, False])
def test_chat_content_chunk_is_a_valid_openai_chunk(first):
    chunks = ChatChunks("chatcmpl-1", "my/model", 1700000000)
    (payload,) = events(chunks.content(NASTY, first))
    chunk = ChatCompletionChunk.model_validate_json(payload)
    assert chunk.id == "chatcmpl-1" and chunk.model == "my/model" and chunk.created == 1700000000
    assert chunk.object == "chat.completion.chunk"
    assert chunk.choices[0].delta.content == NASTY
    assert chunk.choices[0].delta.role == ("assistant" if first else None)
    assert chunk.choices[0].finish_reason is None


@pytest.mark.parametrize("first", [True, False])
def test_chat_finish_and_usage_chunks(first):
    chunks = ChatChunks("c", "m", 1)
    body = chunks.finish("length", first) + chunks.usage(usage_dict(10, 3, 8)) + DONE
    finish, usage, done = events(body)
    parsed = ChatCompletionChunk.model_validate_json(finish)
    assert parsed.choices[0].finish_reason == "length"
    assert (parsed.choices[0].delta.role, parsed.choices[0].delta.content) == \
        (("assistant", "") if first else (None, None))
    parsed = ChatCompletionChunk.model_validate_json(usage)
    assert parsed.choices == []
    assert parsed.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 8}}
    assert done == b"[DONE]"


def test_completion_chunks():
    chunks = CompletionChunks("cmpl-9", "m", 5)
    content, finish, usage = events(chunks.content(NASTY) + chunks.finish("stop") + chunks.usage(usage_dict(1, 2, 0)))
    parsed = json.loads(content)  # the SDK's Completion model has no "not finished yet" (it builds stream chunks unvalidated)
    assert parsed["object"] == "text_completion" and parsed["choices"][0]["text"] == NASTY
    assert parsed["choices"][0]["finish_reason"] is None and parsed["id"] == "cmpl-9"
    parsed = CompletionChunk.model_validate_json(finish)
    assert (parsed.choices[0].text, parsed.choices[0].finish_reason) == ("", "stop")
    assert json.loads(usage)["usage"]["total_tokens"] == 3 and json.loads(usage)["choices"] == []


def test_error_event_is_one_openai_error_event():
    body = {"error": {"message": "engine error: x\ny", "type": "internal_error", "param": None, "code": "engine_error"}}
    (payload,) = events(error_event(body))
    assert json.loads(payload) == body


def test_folded_responses_validate():
    chat = ChatCompletion.model_validate_json(chat_response("c", "m", 3, NASTY, "stop", usage_dict(4, 5, 0)))
    assert chat.choices[0].message.content == NASTY and chat.choices[0].message.role == "assistant"
    assert chat.usage.total_tokens == 9
    comp = Completion.model_validate_json(completion_response("d", "m", 3, "hi", "length", usage_dict(1, 1, 0)))
    assert comp.choices[0].text == "hi" and comp.choices[0].finish_reason == "length"


def test_finish_reason_mapping():
    assert [openai_finish_reason(r) for r in (None, "eos", "stop", "length", "cancelled", "error")] == \
        [None, "stop", "stop", "length", "cancelled", "error"]
    assert openai_finish_reason("something_new") == "something_new"


def test_dynamo_spellings_of_a_finish_reason_map_like_ours():
    # A Dynamo worker may send vLLM's "abort", "error: <message>" or "content_filter".
    assert [openai_finish_reason(r) for r in ("abort", "error: out of blocks", "content_filter")] == \
        ["cancelled", "error", "content_filter"]

"""Big-body intake: the body is read whole and refused early only when the prompt surely
cannot fit; escapes cannot trick the bound into refusing a prompt that fits."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo.frontend.intake import SHAPE_CHECK_BYTES, early_refusal
from dynamo.llm.prompt_bound import PromptBound
from dynamo.llm.tokenizer import Tokenizer
from dynamo.runtime.asgi import BodyTooLarge, read_body


class _Pipeline:
    def __init__(self, bound: PromptBound, context_length: int) -> None:
        self.bound = bound
        self.context_length = context_length


@pytest.fixture(scope="module")
def pipeline(tiny_model) -> _Pipeline:
    return _Pipeline(PromptBound.from_backend(Tokenizer.from_dir(tiny_model).backend), 2048)


def refusal(body: bytes, kind: str, pipeline):
    return asyncio.run(early_refusal(body, kind, lambda name: pipeline if name == "tiny" else None))


def chat_body(content: str, role: str = "user", model: str = "tiny") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": role, "content": content}]}).encode()


def test_huge_user_prompt_is_refused(pipeline):
    err = refusal(chat_body("x" * (3 * SHAPE_CHECK_BYTES)), "chat", pipeline)
    assert err is not None and err.status == 400 and err.body()["error"]["code"] == "context_length_exceeded"
    assert err.overflow is not None and err.overflow.prompt_tokens >= 2048 == err.overflow.context_length


def test_huge_prompt_in_content_parts_is_refused(pipeline):
    """Clients that send content as parts (text parts, and an image's data beside them) are bounded by the text."""
    parts = [{"type": "text", "text": "x" * (2 * SHAPE_CHECK_BYTES)}, {"type": "text", "text": "y" * SHAPE_CHECK_BYTES}]
    err = refusal(json.dumps({"model": "tiny", "messages": [{"role": "user", "content": parts}]}).encode(), "chat",
                  pipeline)
    assert err is not None and err.body()["error"]["code"] == "context_length_exceeded"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (3 * SHAPE_CHECK_BYTES)}}
    small_text = [{"type": "text", "text": "what is this?"}, image]
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": small_text}]}).encode()
    assert refusal(body, "chat", pipeline) is None  # a big image is not a big prompt


def test_huge_completion_prompt_is_refused(pipeline):
    body = json.dumps({"model": "tiny", "prompt": "y" * (3 * SHAPE_CHECK_BYTES)}).encode()
    assert refusal(body, "completion", pipeline).status == 400


def test_escapes_do_not_count_as_text(pipeline):
    # 6 bytes of JSON per character: the raw size is over the bound, the text is not.
    messages = [{"role": "assistant", "content": "z" * SHAPE_CHECK_BYTES}, {"role": "user", "content": "\x01" * 60_000}]
    body = json.dumps({"model": "tiny", "messages": messages}).encode()
    assert pipeline.bound.min_tokens_from_bytes(6 * 60_000) >= pipeline.context_length
    assert refusal(body, "chat", pipeline) is None


@pytest.mark.parametrize("body", [
    chat_body("x" * SHAPE_CHECK_BYTES, model="other"),   # unknown model: the normal path answers
    chat_body("x" * SHAPE_CHECK_BYTES, role="assistant"),  # only user text bounds every template
    b"{" + b" " * SHAPE_CHECK_BYTES,                       # not JSON: the full decode says why
    chat_body("x" * 1000),                                 # small bodies are not scanned
])
def test_left_to_the_full_path(pipeline, body):
    assert refusal(body, "chat", pipeline) is None


def test_read_body_joins_chunks_and_enforces_the_limit():
    def receiver(chunks):
        messages = iter([{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                         for i, c in enumerate(chunks)])

        async def receive():
            return next(messages)
        return receive

    assert asyncio.run(read_body(receiver([b"abc"]), 10)) == b"abc"
    assert bytes(asyncio.run(read_body(receiver([b"ab", b"cd", b""]), 10))) == b"abcd"
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(receiver([b"abcdef", b"ghijkl"]), 10))

"""Big-body intake: the body is read whole and refused early only when the prompt surely
cannot fit; escapes cannot trick the bound into refusing a prompt that fits."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo.frontend.intake import SHAPE_CHECK_BYTES, early_refusal, utf8_slices
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


def test_each_prompt_of_a_batch_is_judged_as_one_and_the_first_over_named(pipeline):
    """Batched prompts: refused early when one of them surely cannot fit, as it would alone (the 400 names it);
    many prompts that each fit are left to the full path, however big together."""
    big, fits = "y" * (3 * SHAPE_CHECK_BYTES), "z" * 4000
    err = refusal(json.dumps({"model": "tiny", "prompt": [fits, big, big]}).encode(), "completion", pipeline)
    assert err is not None and (err.status, err.param, err.code) == (400, "prompt", "context_length_exceeded")
    assert err.message.startswith("prompt[1]: ") and err.overflow is not None
    one = refusal(json.dumps({"model": "tiny", "prompt": [big]}).encode(), "completion", pipeline)
    assert one is not None and not one.message.startswith("prompt[")  # a one-element list is the prompt it holds
    many = json.dumps({"model": "tiny", "prompt": [fits] * (2 * SHAPE_CHECK_BYTES // len(fits))}).encode()
    assert len(many) > SHAPE_CHECK_BYTES and refusal(many, "completion", pipeline) is None
    ids = json.dumps({"model": "tiny", "prompt": [[1] * SHAPE_CHECK_BYTES, [2]]}).encode()
    assert refusal(ids, "completion", pipeline) is None  # token ids: the full path counts them


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


def test_utf8_slices_join_characters_cut_by_a_slice_edge_and_refuse_bad_bytes():
    text = "aé€😀" * 5
    for size in (1, 2, 3, 7, 100):
        assert "".join(utf8_slices(text.encode(), size)) == text
    with pytest.raises(UnicodeDecodeError):
        list(utf8_slices(b"ok" * 10 + b"\xff", 4))
    with pytest.raises(UnicodeDecodeError):  # a character cut by the end of the data
        list(utf8_slices("é".encode()[:1], 4))

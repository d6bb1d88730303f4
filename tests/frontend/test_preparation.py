"""Where a chat's prompt is prepared: inline on the event loop when its text is mostly cached, on the
prep pool when there is real tokenizing to do, and, in a burst on one new system prompt, tokenized
once while the others wait for it without holding a pool thread. The ids are the same either way."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest

from dynamo.frontend.openai import decode_request
from dynamo.frontend.preparation import (
    INLINE_NEW_CHARS,
    INLINE_TEXT_CHARS,
    PREP_INLINE_BYTES,
    prompt_ids_for,
    tokenized_elsewhere,
)
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ContextOverflow, ModelPipeline, PreprocessError
from dynamo.llm.token_cache import TokenCache

SYSTEM = "You are an agent; you read files, run tools and report. " * 200  # ~11 KB: a body past inline


class CountingPool(ThreadPoolExecutor):
    """The prep pool, counting what is sent to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=262144), TokenCache(1 << 24))


@pytest.fixture
def pool():
    with CountingPool() as p:
        yield p


def chat(system: str, user: str):
    body = msgspec.json.encode({"model": "tiny", "max_tokens": 4, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user}]})
    assert len(body) > PREP_INLINE_BYTES
    return decode_request(body, "chat"), len(body)


def reference_ids(pipeline, req) -> list[int]:
    return pipeline.tokenizer.encode(pipeline.chat_prompt_text(req.message_dicts()))


async def test_a_mostly_cached_chat_is_prepared_inline_and_a_new_one_on_the_pool(pipeline, pool):
    for turn in range(2):  # the first prompts are checked whole: on the pool (their pieces are cached too)
        req, size = chat(SYSTEM, f"question {turn}")
        assert await prompt_ids_for(pipeline, req, size, pool) == reference_ids(pipeline, req)
    assert pool.submitted == 2
    req, size = chat(SYSTEM, "question 2, with a longer message than the others " * 3)
    assert await prompt_ids_for(pipeline, req, size, pool) == reference_ids(pipeline, req)
    assert pool.submitted == 2  # only the new message was left: inline
    req, size = chat(SYSTEM.replace("agent", "assistant"), "a new system prompt")
    assert await prompt_ids_for(pipeline, req, size, pool) == reference_ids(pipeline, req)
    assert pool.submitted == 3  # thousands of new characters: the pool


async def test_a_burst_on_a_new_system_prompt_waits_for_its_tokenizing_off_the_pool(pipeline, pool):
    pipeline.encoder._left_to_check = 0  # pieces alone, as after the first prompts
    req, size = chat(SYSTEM, "first question")
    text = pipeline.chat_prompt_text(req.message_dicts())
    piece = max(pipeline.encoder.pieces(text), key=len)  # the system turn
    key = (pipeline.encoder._owner, piece)
    cache = pipeline.encoder.cache
    assert cache.claim(key) is None  # the burst's first request, on a pool thread, is tokenizing it
    task = asyncio.create_task(prompt_ids_for(pipeline, req, size, pool))
    await asyncio.sleep(0.2)
    assert not task.done() and pool.submitted == 0  # waiting for it, holding no pool thread

    def first_request_done() -> None:
        cache.put(key, pipeline.tokenizer.encode(piece))
        cache.release(key)

    threading.Thread(target=first_request_done).start()
    assert await asyncio.wait_for(task, 10) == reference_ids(pipeline, req)
    assert pool.submitted == 0  # then tokenized the rest inline, the system turn from the cache


async def test_a_wait_for_tokenizing_elsewhere_is_bounded(pipeline):
    key = (pipeline.encoder._owner, "a piece nobody finishes " * 10)
    assert pipeline.encoder.cache.claim(key) is None
    await asyncio.wait_for(tokenized_elsewhere(pipeline, [key], timeout=0.1), 5)  # gives up, no error
    pipeline.encoder.cache.release(key)  # a late release still calls back: harmless, the wait is over
    await asyncio.sleep(0.05)
    await asyncio.wait_for(tokenized_elsewhere(pipeline, [key]), 5)  # nothing pending: at once


async def test_a_long_cached_conversation_is_still_assembled_on_the_pool(pipeline, pool):
    """Assembling ~30k cached tokens takes milliseconds: not on the event loop, whatever is cached."""
    history = [{"role": "system", "content": SYSTEM}]
    for turn in range(60):
        history += [{"role": "user", "content": f"question {turn}: " + "why and how? " * 40},
                    {"role": "assistant", "content": f"answer {turn}: " + "because, like so. " * 120}]
    history.append({"role": "user", "content": "and now?"})
    body = msgspec.json.encode({"model": "tiny", "max_tokens": 4, "messages": history})
    req = decode_request(body, "chat")
    for _ in range(3):  # past the checked prompts, everything but the last message cached
        assert await prompt_ids_for(pipeline, req, len(body), pool) == reference_ids(pipeline, req)
    text = pipeline.chat_prompt_text(req.message_dicts())
    assert pipeline.encode_cost(text).new_chars <= INLINE_NEW_CHARS < INLINE_TEXT_CHARS < len(text)
    assert pool.submitted == 3  # cheap to tokenize, but long to assemble


def test_a_prompt_over_the_context_says_by_how_much(tiny_model):
    small = ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=64), TokenCache(1 << 20))
    ids = list(range(1, 41))
    assert small.max_tokens_for(ids, None, "messages") == 24  # the rest of the context
    with pytest.raises(PreprocessError) as output_over:
        small.max_tokens_for(ids, 30, "messages")
    assert output_over.value.overflow == ContextOverflow(40, 64, 30) and output_over.value.param == "max_tokens"
    with pytest.raises(PreprocessError) as prompt_over:
        small.completion_prompt_ids(list(range(1, 70)))
    assert prompt_over.value.overflow == ContextOverflow(69, 64)

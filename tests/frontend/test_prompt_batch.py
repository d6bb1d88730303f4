"""Batched completion prompts (`prompt_batch.py`) as far as pure logic goes: which prompts are a batch and which
batches validation refuses, and a batch's preparation with the tiny model's real pipeline: each prompt its own
tokens and `n` wire requests in flat choice order under one response id, and a prompt's 400 naming which prompt."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import decode_request
from dynamo.frontend.prompt_batch import PromptBatch, is_batched, prepare
from dynamo.frontend.request_path import tokenized_prompt
from dynamo.frontend.validation import MAX_N, validate_completion
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.token_cache import TokenCache
from tests.frontend.test_preparation import CountingPool

CONTEXT = 64


def completion(**fields):
    return decode_request(json.dumps({"model": "tiny", "max_tokens": 4, **fields}).encode(), "completion")


def refusal(req) -> ApiError:
    with pytest.raises(ApiError) as err:
        validate_completion(req)
    return err.value


@pytest.mark.parametrize("prompt, batched", [
    ("one", False), (["one"], False), ([[1, 2, 3]], False), ([1, 2, 3], False),
    (["one", "two"], True), ([[1, 2], [3]], True)])
def test_a_batch_is_a_list_of_several_prompts(prompt, batched):
    req = completion(prompt=prompt)
    validate_completion(req)
    assert is_batched(req) is batched


@pytest.mark.parametrize("prompt, where", [(["a", "", "c"], "prompt[1]"), ([[1], [2], []], "prompt[2]")])
def test_an_empty_prompt_in_a_batch_is_a_400_naming_it(prompt, where):
    error = refusal(completion(prompt=prompt))
    assert (error.status, error.param) == (400, "prompt") and where in error.message


def test_a_batch_may_ask_for_at_most_max_n_choices_in_all():
    validate_completion(completion(prompt=["p"] * (MAX_N // 2), n=2, temperature=1))
    error = refusal(completion(prompt=["p"] * (MAX_N // 2 + 1), n=2, temperature=1))
    assert (error.status, error.param) == (400, "prompt") and str(MAX_N + 2) in error.message
    assert refusal(completion(prompt=["p"] * (MAX_N + 1))).param == "prompt"


def test_a_one_element_list_is_checked_as_before():
    validate_completion(completion(prompt=[""]))  # one prompt: its emptiness is the tokenizer's to judge


@pytest.fixture
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=CONTEXT),
                         TokenCache(1 << 20))


async def prepared(pipeline, req, request_id: str | None = "rid") -> PromptBatch:
    def tokenize(sub, size: int):
        return tokenized_prompt(pipeline, sub, None, size, frozenset(), None)
    return await prepare(pipeline, req, None, tokenize, request_id, "trace")


async def test_each_prompt_has_its_own_tokens_and_n_wire_requests_in_flat_order(pipeline):
    req = completion(prompt=["a cat", "the dog ran"], n=2, temperature=1, seed=7)
    batch = await prepared(pipeline, req)
    assert batch.ids == [pipeline.completion_prompt_ids("a cat"), pipeline.completion_prompt_ids("the dog ran")]
    assert [p.request_id for p in batch.preqs] == [f"cmpl-rid-{k}" for k in range(4)]
    assert [p.token_ids for p in batch.preqs] == [batch.ids[0]] * 2 + [batch.ids[1]] * 2  # each routed on its own
    assert [p.sampling_options.seed for p in batch.preqs] == [7, 8, 7, 8]
    assert {p.trace_id for p in batch.preqs} == {"trace"}
    assert [batch.prompt_of(k) for k in range(4)] == [0, 0, 1, 1]


async def test_token_id_prompts_and_their_echo(pipeline):
    req = completion(prompt=[[11, 12], [13]], echo=True)
    batch = await prepared(pipeline, req, None)
    assert batch.ids == [[11, 12], [13]] and len(batch.preqs) == 2
    rid = batch.preqs[0].request_id.rsplit("-", 1)[0]
    assert [p.request_id for p in batch.preqs] == [f"{rid}-0", f"{rid}-1"]  # one id for the response
    decode = pipeline.tokenizer.decode
    assert batch.echoes(req, decode) == [decode([11, 12], skip_special_tokens=False),
                                         decode([13], skip_special_tokens=False)]
    assert batch.echoes(completion(prompt=[[11], [13]]), decode) == []


async def test_the_prompt_over_the_context_is_the_400_and_named(pipeline):
    req = completion(prompt=["short", "word " * (CONTEXT * 2), "also short"])
    with pytest.raises(ApiError) as err:
        await prepared(pipeline, req)
    error = err.value
    assert (error.status, error.param, error.code) == (400, "prompt", "context_length_exceeded")
    assert error.message.startswith("prompt[1]: ") and error.overflow is not None


async def test_a_prompt_leaving_no_room_for_max_tokens_is_named_too(pipeline):
    req = completion(prompt=[[11] * 4, [12] * (CONTEXT - 2)], max_tokens=8)
    with pytest.raises(ApiError) as err:
        await prepared(pipeline, req)
    assert err.value.param == "max_tokens" and err.value.message.startswith("prompt[1]: ")


async def test_prompts_are_tokenized_concurrently(pipeline):
    started, gate = [], asyncio.Event()

    async def tokenize(sub, size: int):
        started.append(sub.prompt)
        await gate.wait()
        return pipeline.completion_prompt_ids(sub.prompt), b""

    task = asyncio.ensure_future(prepare(pipeline, completion(prompt=["a", "b", "c"]), None, tokenize, "r", None))
    await asyncio.sleep(0.01)
    assert started == ["a", "b", "c"]  # all under way before any is done
    gate.set()
    assert len((await task).preqs) == 3


@pytest.mark.parametrize("nvext, param", [({"token_data": [1, 2]}, "nvext.token_data"),
                                          ({"annotations": ["query_instance_id"]}, "nvext.annotations")])
async def test_what_names_one_prompts_tokens_or_worker_is_refused_for_a_batch(pipeline, nvext, param):
    with pytest.raises(ApiError) as err:
        await prepared(pipeline, completion(prompt=["a", "b"], nvext=nvext))
    assert (err.value.status, err.value.param) == (400, param)


async def test_a_batch_too_big_to_tokenize_on_the_loop_goes_to_the_pool_a_prompt_per_job(tiny_model):
    pipeline = ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=1 << 16),
                             TokenCache(1 << 20))
    small, big = ["a short one", "another"], [f"prompt {i}: " + "hello there " * 300 for i in range(3)]
    with CountingPool() as pool:
        def tokenize(sub, size: int):
            return tokenized_prompt(pipeline, sub, None, size, frozenset(), pool)
        await prepare(pipeline, completion(prompt=small), None, tokenize, "r", None)
        assert pool.submitted == 0  # a few bytes: inline, as a small body is
        batch = await prepare(pipeline, completion(prompt=big), None, tokenize, "r", None)
        assert pool.submitted == 3  # ~11 KB together: each on the pool
    assert batch.ids == [pipeline.completion_prompt_ids(p) for p in big]

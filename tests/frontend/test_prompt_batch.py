"""Batched completion prompts (`prompt_batch.py`) as far as pure logic goes: which prompts are a batch and which
batches validation refuses, and a batch's preparation with the tiny model's real pipeline: each prompt its own
tokens and `n` wire requests in flat choice order under one response id, and a prompt's 400 naming which prompt;
a small batch prepared on the loop with other work between prompts, a big one as one prep-pool job; the first bad
prompt (or the request's cancellation) ending the preparation of the rest."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.openai import decode_request
from dynamo.frontend.prompt_batch import INLINE_BATCH_IDS, PromptBatch, _of_prompt, is_batched, prepare
from dynamo.frontend.request_path import RequestPath, RunInputs
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


@pytest.mark.parametrize("prompt", [["p"] * (MAX_N * 4) + [7], [[1]] * (MAX_N * 4) + ["p"], [[1], [2, "x"]]])
def test_a_malformed_list_is_invalid_type_however_long(prompt):
    error = refusal(completion(prompt=prompt))
    assert (error.param, error.code) == ("prompt", "invalid_type")  # its types first, not its count


def test_a_one_element_list_is_checked_as_before():
    assert refusal(completion(prompt=[[]])).code == "invalid_type"
    validate_completion(completion(prompt=[""]))  # one prompt: its emptiness is the tokenizer's to judge


@pytest.fixture
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=CONTEXT),
                         TokenCache(1 << 20))


@pytest.fixture
def roomy(tiny_model):
    """The tiny model with a context that takes big batches."""
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=1 << 16),
                         TokenCache(1 << 20))


async def prepared(pipeline, req, request_id: str | None = "rid", pool=None) -> PromptBatch:
    return await prepare(pipeline, req, None, pool, request_id, "trace")


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
    assert batch.echoes == [decode([11, 12], skip_special_tokens=False), decode([13], skip_special_tokens=False)]
    assert (await prepared(pipeline, completion(prompt=[[11], [13]]))).echoes == []
    assert (await prepared(pipeline, completion(prompt=["a", "b c"], echo=True))).echoes == ["a", "b c"]


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


class Counted:
    """A pipeline whose prompt checks are counted, each noting how often the loop turned meanwhile (`ticks`)."""

    def __init__(self, pipeline) -> None:
        self.pipeline, self.seen, self.ticks = pipeline, [], 0

    def __getattr__(self, name):
        return getattr(self.pipeline, name)

    def completion_prompt_ids(self, prompt, *args):
        self.seen.append(self.ticks)
        return self.pipeline.completion_prompt_ids(prompt, *args)

    async def ticking(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


async def test_a_small_batch_is_prepared_inline_with_the_loop_free_between_prompts(pipeline):
    counted = Counted(pipeline)
    ticker = asyncio.ensure_future(counted.ticking())
    await asyncio.sleep(0)
    try:
        with CountingPool() as pool:
            batch = await prepared(counted, completion(prompt=[[11, 12], [13], [14]], echo=True), pool=pool)
        assert pool.submitted == 0 and len(batch.preqs) == 3
    finally:
        ticker.cancel()
    assert counted.seen[0] < counted.seen[1] < counted.seen[2]  # other work ran between prompts


async def test_the_first_bad_prompt_ends_the_preparation_of_the_rest(pipeline):
    counted = Counted(pipeline)
    with pytest.raises(ApiError) as err:
        await prepared(counted, completion(prompt=[[11], [12] * (CONTEXT * 2), [13], [14]]))
    assert err.value.message.startswith("prompt[1]: ") and len(counted.seen) == 2


@pytest.mark.parametrize("fields, param", [
    ({"nvext": {"token_data": [1, 2]}}, "nvext.token_data"),
    ({"nvext": {"annotations": ["query_instance_id"]}}, "nvext.annotations"),
    ({"nvext": {"annotations": ["request_id", "formatted_prompt"]}}, "nvext.annotations"),  # one prompt's text
    ({"nvext": {"annotations": ["token_ids"]}}, "nvext.annotations"),  # and its ids
    ({"nvext": {"max_thinking_tokens": 8}}, "nvext.max_thinking_tokens"),  # judged by one prompt's end
    ({"thinking_token_budget": 8}, "thinking_token_budget")])
async def test_what_names_one_prompts_tokens_or_worker_is_refused_for_a_batch(pipeline, fields, param):
    with pytest.raises(ApiError) as err:
        await prepared(pipeline, completion(prompt=["a", "b"], **fields))
    assert (err.value.status, err.value.param, err.value.code) == (400, param, "unsupported_value")


class Overloaded(ApiError):
    pass


def test_a_prompts_400_names_it_and_keeps_the_rest_of_the_error():
    error = Overloaded(400, "too long", param="max_tokens", code="context_length_exceeded")
    error.retry_after = 3
    named = _of_prompt(error, 2)
    assert type(named) is Overloaded and named.message == str(named) == "prompt[2]: too long"
    assert (named.param, named.code, named.retry_after) == ("max_tokens", "context_length_exceeded", 3)
    assert error.message == "too long"  # the original is left as it was
    other = ApiError(503, "no worker")
    assert _of_prompt(other, 1) is other  # not about the prompt: as it is


@pytest.mark.parametrize("big", [
    [f"prompt {i}: " + "hello there " * 300 for i in range(3)],  # ~11 KB of text together
    [[11 + i] * (INLINE_BATCH_IDS // 2) for i in range(3)],  # more ids than are checked on the loop
    [[11 + i] * (INLINE_BATCH_IDS // 6) for i in range(3)]])  # fewer, but decoded for their echo too
async def test_a_batch_too_big_for_the_loop_is_one_pool_job(roomy, big):
    pipeline = roomy
    with CountingPool() as pool:
        await prepared(pipeline, completion(prompt=["a short one", "another"]), pool=pool)
        assert pool.submitted == 0  # a few bytes: inline, as a small body is
        batch = await prepared(pipeline, completion(prompt=big, echo=True), pool=pool)
        assert pool.submitted == 1  # one job for them all, never a job per prompt
    assert batch.ids == [pipeline.completion_prompt_ids(p) for p in big]
    decode = pipeline.tokenizer.decode
    assert batch.echoes == [p if isinstance(p, str) else decode(p, skip_special_tokens=False) for p in big]


async def test_a_pool_batchs_first_bad_prompt_ends_the_job(tiny_model):
    pipeline = ModelPipeline(build_card(tiny_model, name="tiny", block_size=16, context_length=1 << 12),
                             TokenCache(1 << 20))
    counted = Counted(pipeline)
    prompts = [[11] * 100, [12] * (1 << 13)] + [[13] * 9000] * 4
    with CountingPool() as pool, pytest.raises(ApiError) as err:
        await prepared(counted, completion(prompt=prompts), pool=pool)
    assert pool.submitted == 1 and err.value.message.startswith("prompt[1]: ") and len(counted.seen) == 2


async def test_a_route_with_its_own_run_class_is_refused_a_batch_not_run_without_it(pipeline):
    """`RequestPath` runs a batch as `BatchedCompletionRun`: a route that asked for another run class (or its
    arguments) would lose it silently, so it is refused where the batch's route is taken."""
    class OtherRun(GenerationRun):
        pass

    path = RequestPath(app=None)
    for run_cls, run_kw in ((OtherRun, {}), (GenerationRun, {"extra": 1})):
        inputs = RunInputs(completion(prompt=["a", "b"]), "completions", 0, None, None, run_cls, None, None, False,
                           None, None, 0.0, run_kw)
        with pytest.raises(TypeError):
            await path._prepared_batch(inputs, None, inputs.req, 0)


async def test_a_cancelled_batch_stops_its_pool_job_after_the_prompt_at_hand(roomy):
    gate = threading.Event()
    counted = Counted(roomy)
    checked = counted.completion_prompt_ids

    def held(prompt, *args):
        gate.wait(30)
        return checked(prompt, *args)
    counted.completion_prompt_ids = held
    with CountingPool() as pool:
        task = asyncio.ensure_future(prepared(counted, completion(prompt=[[11] * 9000] * 8), pool=pool))
        while pool.submitted == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        gate.set()
    assert task.cancelled() and len(counted.seen) == 1  # the job ended with the prompt it was on

"""Usage's `reasoning_tokens` (frontend/reasoning_tokens.py): the generated tokens the reasoning parser
made reasoning of, shared out per batch as its text was, over the output stage with the tiny tokenizer."""

from __future__ import annotations

import pytest

from dynamo.frontend.output import OutputSpec, OutputStage
from dynamo.frontend.reasoning_tokens import ReasoningTokens
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput

QWEN3 = OutputSpec([], reasoning_parser="qwen3")


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))


def test_batches_count_as_their_text_went():
    count = ReasoningTokens()
    count.add(1, 0, 0)  # a tag: shown with what follows
    count.add(2, 10, 0)
    count.add(4, 5, 15)  # both: in proportion
    count.add(3, 0, 6)
    count.finish()
    assert count.count == 3 + 1


def test_unshown_tokens_at_the_end_go_as_the_last_text_went():
    cut = ReasoningTokens()
    cut.add(5, 20, 0)
    cut.add(2, 0, 0)  # held, then the token limit: still reasoning
    cut.finish()
    assert cut.count == 7
    answered = ReasoningTokens()
    answered.add(5, 20, 0)
    answered.add(1, 0, 3)
    answered.add(1, 0, 0)  # the end-of-sequence token after the answer
    answered.finish()
    assert answered.count == 5


def stage_count(pipeline, spec: OutputSpec, batches: list[list[int]]) -> tuple[OutputStage, str, str]:
    stage = OutputStage(pipeline, spec)
    deltas = [stage.add(LLMEngineOutput(token_ids=ids)) for ids in batches] + [stage.finish()]
    return stage, "".join(d.reasoning for d in deltas), "".join(d.content for d in deltas)


def test_one_token_at_a_time_counts_the_reasoning_and_its_opening_tag(pipeline):
    thought = pipeline.tokenizer.encode("<think>The user wants Paris weather.")
    answer = pipeline.tokenizer.encode("</think>It is sunny in Paris.")
    stage, reasoning, content = stage_count(pipeline, QWEN3, [[t] for t in thought + answer])
    assert (reasoning, content) == ("The user wants Paris weather.", "It is sunny in Paris.")
    assert stage.reasoning_tokens == len(thought)
    assert stage.completion_tokens == len(thought) + len(answer)


def test_one_batch_is_shared_by_characters(pipeline):
    ids = pipeline.tokenizer.encode("<think>abcdef</think>abc")
    stage, reasoning, content = stage_count(pipeline, QWEN3, [ids])
    assert (reasoning, content) == ("abcdef", "abc")
    assert stage.reasoning_tokens == round(len(ids) * 6 / 9)


def test_no_reasoning_parser_counts_none(pipeline):
    ids = pipeline.tokenizer.encode("<think>abc</think>def")
    stage, _, content = stage_count(pipeline, OutputSpec([]), [[t] for t in ids])
    assert content == "<think>abc</think>def" and stage.reasoning_tokens == 0

"""How much of the context a prompt may take (`ModelPipeline`): a prompt to generate from leaves room
for one output token; a pooling input (embeddings, classification, a cross-encoder's pair) may fill the
whole context, as vLLM's pooling runner takes it, and is refused only beyond it."""

from __future__ import annotations

import pytest

from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline, PreprocessError
from dynamo.llm.rerank_pairs import PairFormat, pair_tokens
from dynamo.llm.tokenizer import Tokenizer

TEXT = "the panda eats bamboo in the quiet forest " * 4
PAIR = ("what do pandas eat?", "bamboo, mostly")


def pipeline(tiny_model, context_length: int) -> ModelPipeline:
    return ModelPipeline(build_card(tiny_model, name="m", block_size=16, context_length=context_length))


def refusal(call) -> PreprocessError:
    with pytest.raises(PreprocessError) as info:
        call()
    assert info.value.code == "context_length_exceeded"
    return info.value


def test_a_pooling_input_may_fill_the_context_and_no_more(tiny_model):
    p = pipeline(tiny_model, 64)
    assert p.pooling_prompt_ids(list(range(10, 74)), "input") == list(range(10, 74))
    error = refusal(lambda: p.pooling_prompt_ids(list(range(10, 75)), "input"))
    assert error.param == "input" and "65 tokens long." in error.message and "no room" not in error.message
    with pytest.raises(PreprocessError, match="empty"):
        p.pooling_prompt_ids([], "input")


def test_a_prompt_to_generate_from_leaves_room_for_output(tiny_model):
    p = pipeline(tiny_model, 64)
    assert len(p.completion_prompt_ids(list(range(10, 73)))) == 63
    assert "leaving no room for output" in refusal(lambda: p.completion_prompt_ids(list(range(10, 74)))).message
    with pytest.raises(PreprocessError):
        p.max_tokens_for(list(range(10, 74)), 1, "prompt")


def test_a_text_of_exactly_the_context_is_pooled_not_generated_from(tiny_model):
    count = len(Tokenizer.from_dir(tiny_model).encode(TEXT))
    p = pipeline(tiny_model, count)
    assert len(p.pooling_prompt_ids(TEXT, "input")) == count
    refusal(lambda: p.completion_prompt_ids(TEXT))
    refusal(lambda: pipeline(tiny_model, count - 1).pooling_prompt_ids(TEXT, "input"))


def test_a_cross_encoders_pair_may_fill_the_context(tiny_model):
    count = len(pair_tokens(Tokenizer.from_dir(tiny_model), [PAIR], PairFormat())[0].ids)
    assert len(pipeline(tiny_model, count).pair_prompts([PAIR], PairFormat(), ["documents[0]"])[0].ids) == count
    error = refusal(lambda: pipeline(tiny_model, count - 1).pair_prompts([PAIR], PairFormat(), ["documents[0]"]))
    assert error.param == "documents[0]"


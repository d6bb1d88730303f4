"""The frontend's embeddings and scoring inputs (`pooling_prompt`) take the pooling rule: an input may
fill the model's whole context, as vLLM's pooling runner takes it (nothing is generated after it)."""

from __future__ import annotations

import pytest

from dynamo.frontend.embeddings import pooling_prompt
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline, PreprocessError


def test_an_embeddings_input_may_fill_the_context_and_no_more(tiny_model):
    p = ModelPipeline(build_card(tiny_model, name="m", block_size=16, context_length=64))
    assert pooling_prompt(p, list(range(10, 74)), "input") == list(range(10, 74))
    with pytest.raises(PreprocessError) as info:
        pooling_prompt(p, list(range(10, 75)), "input")
    assert info.value.param == "input" and info.value.code == "context_length_exceeded"

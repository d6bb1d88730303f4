"""The card contract: every parser name a worker may publish has a registered parser."""

import json

from dynamo.frontend.output import OutputSpec
from dynamo.frontend.parsers import REASONING_PARSERS, TOOL_PARSERS
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.llm.parser_names import REASONING_PARSERS as CARD_REASONING
from dynamo.llm.parser_names import TOOL_CALL_PARSERS as CARD_TOOLS
from dynamo.llm.model_card import build_card
from dynamo.llm.parser_names import check_parser_names
from dynamo.llm.preprocessor import ModelPipeline

import pytest

from tests.frontend.test_output_stage import run as run_stage


def test_every_card_name_is_registered():
    assert set(CARD_TOOLS) <= set(TOOL_PARSERS)
    assert set(CARD_REASONING) <= set(REASONING_PARSERS)


def test_workers_refuse_unknown_names():
    check_parser_names("hermes", "deepseek-r1")
    with pytest.raises(ValueError, match="--dyn-tool-call-parser"):
        check_parser_names("nope", None)
    with pytest.raises(ValueError, match="--dyn-reasoning-parser"):
        check_parser_names(None, "nope")


def test_dynamos_newest_names_reasoning_falls_back_tools_refused():
    """A reasoning format not known here is parsed as `<think>` tags (Dynamo's own fallback); a tool-call
    format not known here stops the worker rather than leave an agent's calls unparsed."""
    check_parser_names(None, "gemma4")
    assert REASONING_PARSERS["kimi_k3"]().feed("<think>a</think>b") == ("a", "b")
    with pytest.raises(ValueError, match="--dyn-tool-call-parser"):
        check_parser_names("kimi_k3", None)


def test_dynamos_other_spellings_of_a_parser_name():
    """A card may carry `deepseek-v4`, `deepseekv4`, `gemma-4`, `qwen3-coder`: the worker accepted them at
    start, so the frontend must build the same parser for them (not fail the request)."""
    from dynamo.frontend.parsers import make_reasoning_parser, make_tool_parser

    for spelling, name in (("deepseek-v4", "deepseek_v4"), ("deepseekv4", "deepseek_v4"), ("gemma-4", "gemma4"),
                           ("qwen3-coder", "qwen3_coder"), ("minimax-m3", "minimax_m3")):
        check_parser_names(spelling, None)
        assert type(make_tool_parser(spelling)) is type(make_tool_parser(name))
    check_parser_names(None, "deepseek-r1")
    assert type(make_reasoning_parser("deepseek-r1")) is type(make_reasoning_parser("deepseek_r1"))


def test_inkling_is_known_for_both_parsers():
    """Inkling's own formats, not the `<think>` fallback: its tool calls no longer stop the worker."""
    check_parser_names("inkling", "inkling")
    assert "inkling" in CARD_TOOLS and "inkling" in CARD_REASONING
    assert REASONING_PARSERS["inkling"]().feed("<think>a</think>b") == ("", "<think>a</think>b")
    assert TOOL_PARSERS["inkling"]([]).needs_special_tokens


@pytest.mark.parametrize("prompt_reasoning", [PromptReasoning.UNKNOWN, PromptReasoning.OPENED])
def test_inkling_through_the_output_stage(tiny_model, prompt_reasoning):
    """A worker's card naming `inkling` for both: reasoning, the answer and the call, token by token."""
    pipeline = ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))
    spec = OutputSpec([], tool_parser="inkling", reasoning_parser="inkling", tool_mode="auto",
                      prompt_reasoning=prompt_reasoning)
    opening = "" if prompt_reasoning is PromptReasoning.OPENED else "<|content_thinking|>"
    text = (opening + "Need weather.<|end_message|><|message_model|><|content_text|>Checking.<|end_message|>\n"
            '<|message_model|>get_weather<|content_invoke_tool_json|>{"name": "get_weather", "args": {"city": "SF"}}'
            "<|end_message|><|content_model_end_sampling|>")
    content, reasoning, calls, reason = run_stage(pipeline, spec, text)
    assert (reasoning, content, reason) == ("Need weather.", "Checking.", "tool_calls")
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", {"city": "SF"})]

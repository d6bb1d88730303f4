"""The output stage over real token ids from the tiny tokenizer: detokenize -> stop ->
reasoning -> tool calls, one token at a time, and the call filter."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.output import OutputSpec, OutputStage
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))


def run(pipeline, spec: OutputSpec, text: str):
    stage = OutputStage(pipeline, spec)
    content, reasoning, calls = [], [], {}
    deltas = [stage.add(LLMEngineOutput(token_ids=[t])) for t in pipeline.tokenizer.encode(text)]
    deltas.append(stage.finish())
    for d in deltas:
        content.append(d.content)
        reasoning.append(d.reasoning)
        for c in d.tool_calls:
            entry = calls.setdefault(c.index, {"name": c.name, "arguments": ""})
            entry["arguments"] += c.arguments
    return "".join(content), "".join(reasoning), calls, stage.finish_reason("eos")


TEXT = ('<think>Weather needed.</think><tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')


def test_reasoning_then_calls(pipeline):
    spec = OutputSpec([], tool_parser="hermes", reasoning_parser="qwen3", tool_mode="auto")
    content, reasoning, calls, reason = run(pipeline, spec, TEXT)
    assert (content, reasoning, reason) == ("", "Weather needed.", "tool_calls")
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_named_and_single_call_filters(pipeline):
    named = OutputSpec([], tool_parser="hermes", reasoning_parser="qwen3", tool_mode="named", named_tool="get_time")
    _, _, calls, _ = run(pipeline, named, TEXT)
    assert list(calls) == [0] and calls[0]["name"] == "get_time"
    single = OutputSpec([], tool_parser="hermes", reasoning_parser="qwen3", tool_mode="auto",
                        parallel_tool_calls=False)
    _, _, calls, _ = run(pipeline, single, TEXT)
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"


def test_tool_choice_none_leaves_text_alone(pipeline):
    content, reasoning, calls, reason = run(pipeline, OutputSpec([], tool_parser="hermes"), TEXT)
    assert content == TEXT and calls == {} and reason == "stop"


def test_stop_string_applies_before_parsers(pipeline):
    spec = OutputSpec(["<tool_call>"], tool_parser="hermes", reasoning_parser="qwen3", tool_mode="auto")
    content, reasoning, calls, reason = run(pipeline, spec, TEXT)
    assert (content, reasoning, calls, reason) == ("", "Weather needed.", {}, "stop")


def test_named_without_a_format_parser_takes_the_whole_output(pipeline):
    spec = OutputSpec([], tool_mode="named", named_tool="get_weather")
    _, _, calls, reason = run(pipeline, spec, '{"city": "Paris"}')
    assert calls == {0: {"name": "get_weather", "arguments": '{"city": "Paris"}'}} and reason == "tool_calls"


def test_a_named_choice_the_model_answered_with_another_function_is_its_text(pipeline):
    """No grammar held the model to the named function: the call it made instead is no call, and the answer
    is the text it wrote, that call's block included, in the stream's order (not dropped, not empty)."""
    named = OutputSpec([], tool_parser="hermes", tool_mode="named", named_tool="get_time")
    other = 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call> Done.'
    content, _, calls, reason = run(pipeline, named, other)
    assert (content, calls, reason) == (other, {}, "stop")
    # The named call after it stands; the other one stays out, the text between them is shown.
    then = other + '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    content, _, calls, reason = run(pipeline, named, then)
    assert content == "Checking. Done." and [c["name"] for c in calls.values()] == ["get_time"]
    assert reason == "tool_calls"

"""A stream whose calls are items a client runs (Anthropic's tool_use blocks, Responses' function_call items)
ends as its unary answer does (`choices.HeldCalls`): real token ids from the tiny tokenizer, one at a time,
through the output stage; the unary side is the chat answer (`chat_choice`) framed as Anthropic's blocks
(`messages_run.answer_blocks`) or Responses' items (`responses_events.answer_items`)."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.choices import Choice, HeldCalls, chat_choice, collect
from dynamo.frontend.messages_run import answer_blocks, tool_input
from dynamo.frontend.output import OutputSpec, OutputStage, is_json
from dynamo.frontend.responses_events import answer_items
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput

SPEC = OutputSpec([], tool_parser="hermes", reasoning_parser="qwen3", tool_mode="auto")
WRITE = ('<tool_call>{"name": "Write", "arguments": {"file_path": "/tmp/app.py", "content": "import os\\n'
         'def main():\\n    pass\\n"}}</tool_call>')
OUTPUTS = {
    "calls": 'I will check.<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n' + WRITE,
    "cut": "Writing it." + WRITE[:60],  # a call cut off by the token limit
    "bad-literal": '<tool_call>{"name": "get_weather", "arguments": {"city": tru}}</tool_call>',
    "null": '<tool_call>{"name": "get_time", "arguments": null}</tool_call>',
    "list": '<tool_call>{"name": "get_time", "arguments": [1, 2]}</tool_call>',
    "good-then-cut": WRITE + "\n" + WRITE[:50],
    "text-after": WRITE + "\n\nDone:\n    indented",
    "reasoning": "<think>Plan.</think>" + WRITE[:70],
}


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))


def stream(pipeline, text: str, runnable) -> tuple[str, str, list[tuple[str, dict]]]:
    """(reasoning, text, calls) a stream sends, token by token, its calls held back by `runnable`."""
    stage, hold = OutputStage(pipeline, SPEC), HeldCalls(runnable)
    deltas = [stage.add(LLMEngineOutput(token_ids=[t])) for t in pipeline.tokenizer.encode(text)]
    sent = [d for d in (hold.take(d) for d in deltas + [stage.finish()]) if d is not None]
    released, _ = hold.release(stage)
    # What was held goes out as the unary answer has it: reasoning and text, then each call in one piece.
    pieces = [c.index for d in released for c in d.tool_calls]
    assert pieces == sorted(set(pieces)) and all(not d.tool_calls for d in released[:-1])
    calls: dict[int, dict] = {}
    for d in sent + released:
        for c in d.tool_calls:
            calls.setdefault(c.index, [c.name, ""])[1] += c.arguments
    reasoning = "".join(d.reasoning for d in sent + released)
    return reasoning, "".join(d.content for d in sent + released), [(n, json.loads(a)) for n, a in calls.values()]


def unary(pipeline, text: str, runnable=None) -> tuple[Choice, dict]:
    """The chat answer the run frames; `runnable`: the rule its calls are held to (Responses': `is_json`)."""
    choice = Choice(0, OutputStage(pipeline, SPEC))
    for t in pipeline.tokenizer.encode(text):
        collect(choice, choice.stage.add(LLMEngineOutput(token_ids=[t])))
    collect(choice, choice.stage.finish())
    return choice, chat_choice(choice, "reasoning_content", None, runnable)["message"]


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_an_anthropic_stream_ends_as_the_unary_message(pipeline, name):
    choice, message = unary(pipeline, OUTPUTS[name])
    blocks, calls = answer_blocks(message, "reasoning_content", choice.stage.tool_input_text())
    want_text = "".join(b["text"] for b in blocks if b["type"] == "text")
    want_calls = [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
    reasoning, text, got_calls = stream(pipeline, OUTPUTS[name], lambda a: tool_input(a) is not None)
    assert (text, got_calls) == (want_text, want_calls)
    assert reasoning == "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    assert calls == bool(want_calls)
    assert all(isinstance(i, dict) for _, i in got_calls)  # Anthropic's input is always an object
    if name in ("calls", "text-after"):
        assert calls and want_calls[-1][1]["content"] == "import os\ndef main():\n    pass\n"
    else:  # cut off, not JSON, or not an object: the text the model wrote, no call
        assert not calls and text == choice.stage.tool_input_text() and "<tool_call>" in text


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_a_responses_stream_ends_as_the_unary_response(pipeline, name):
    _, message = unary(pipeline, OUTPUTS[name], is_json)
    items = answer_items(message, "reasoning_content", False)
    want_text = "".join(i["content"][0]["text"] for i in items if i["type"] == "message")
    want_calls = [(i["name"], json.loads(i["arguments"])) for i in items if i["type"] == "function_call"]
    _, text, got_calls = stream(pipeline, OUTPUTS[name], is_json)
    assert (text, got_calls) == (want_text, want_calls)
    # Responses' arguments are a JSON string, as chat's: JSON that is no object is still a call there.
    assert bool(want_calls) == (name in ("calls", "text-after", "null", "list"))


def test_the_item_the_limit_cut_is_incomplete(pipeline):
    _, message = unary(pipeline, OUTPUTS["cut"], is_json)
    items = answer_items(message, "reasoning_content", True)
    assert [(i["type"], i["status"]) for i in items] == [("message", "incomplete")]
    assert items[0]["content"][0]["text"] == "Writing it." + WRITE[:60]
    _, message = unary(pipeline, OUTPUTS["calls"])
    items = answer_items(message, "reasoning_content", True)  # the calls whole: the limit cut nothing of theirs
    assert [(i["type"], i["status"]) for i in items] == [("message", "completed"), ("function_call", "completed"),
                                                         ("function_call", "completed")]


def test_tool_input_is_an_object_or_nothing():
    assert tool_input('{"a": 1}') == {"a": 1}
    assert [tool_input(a) for a in ("null", "[1, 2]", '"x"', '{"a": ', "", "{'a': 1}")] == [None] * 6


@pytest.mark.parametrize("text_first", [False, True])
def test_an_anthropic_answer_orders_its_text_and_thinking_as_its_stream_began(text_first):
    message = {"role": "assistant", "content": "Let me think.", "reasoning_content": "hmm"}
    blocks, calls = answer_blocks(message, "reasoning_content", "", text_first)
    order = [b["type"] for b in blocks]
    assert order == (["text", "thinking"] if text_first else ["thinking", "text"]) and not calls

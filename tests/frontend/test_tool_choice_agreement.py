"""A chat completion's tool calls are one answer, streamed or unary, in every tool mode: the stream sends each
call's deltas as the tool parser reads them, so the unary answer (`choices.chat_choice`) is the calls the stream
sent, also when their arguments never became JSON (a forced call cut by `max_tokens`, a model that wrote no JSON
where no grammar held it: OpenAI's and vLLM's answer), with the finish reason the stream gave (`tool_calls` only
for arguments that are JSON). Output a parser never read as a call is the text, both ways. Real token ids from
the tiny tokenizer, one at a time, through the output stage."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.choices import Choice, chat_choice, collect
from dynamo.frontend.output import OutputSpec, OutputStage
from dynamo.frontend.parsers.base import accumulate_call
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import FinishReason, LLMEngineOutput

TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}}}} for n in ("get_weather", "get_time")]
NAMED = OutputSpec([], tools=TOOLS, tool_mode="named", named_tool="get_weather")  # NamedArguments: no parser
NAMED_JSON = OutputSpec([], tool_parser="hermes", tools=TOOLS, tool_mode="named", named_tool="get_weather",
                        tool_json=True)  # a grammar-bound engine: the JSON is read, not hermes
NAMED_OWN = OutputSpec([], tool_parser="hermes", tools=TOOLS, tool_mode="named", named_tool="get_weather")
REQUIRED = OutputSpec([], tools=TOOLS, tool_mode="required")  # JsonListParser
AUTO = OutputSpec([], tool_parser="hermes", tools=TOOLS, tool_mode="auto")
LENGTH, STOP = FinishReason.LENGTH, FinishReason.STOP
TEXT = " k digits p sure Get"  # what the mocker wrote under a named tool_choice, max_tokens 5

# (spec, output, engine finish) -> the answer: (content, [(name, arguments)], finish_reason)
CASES = {
    "named-text-cut": (NAMED, TEXT, LENGTH, ("", [("get_weather", TEXT)], "length")),
    "named-text": (NAMED, TEXT, STOP, ("", [("get_weather", TEXT)], "stop")),
    "named-json-cut": (NAMED, '{"city": "Pa', LENGTH, ("", [("get_weather", '{"city": "Pa')], "length")),
    "named-json": (NAMED, '{"city": "Paris"}', STOP, ("", [("get_weather", '{"city": "Paris"}')], "tool_calls")),
    "named-grammar-text-cut": (NAMED_JSON, TEXT, LENGTH, ("", [("get_weather", TEXT)], "length")),
    "named-grammar-json": (NAMED_JSON, '{"city": "Paris"}', STOP,
                           ("", [("get_weather", '{"city": "Paris"}')], "tool_calls")),
    "named-own-cut": (NAMED_OWN, '<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', LENGTH,
                      ("", [("get_weather", '{"city": "Pa')], "length")),
    # No JSON list: JsonListParser never opens a call, so the stream sent text.
    "required-text-cut": (REQUIRED, TEXT, LENGTH, (TEXT, [], "length")),
    "required-text": (REQUIRED, TEXT, STOP, (TEXT, [], "stop")),
    "required-list-cut": (REQUIRED, '[{"name": "get_weather", "parameters": {"city": "Pa', LENGTH,
                          ("", [("get_weather", '{"city": "Pa')], "length")),
    "required-list": (REQUIRED, '[{"name": "get_weather", "parameters": {"city": "Paris"}}]', STOP,
                      ("", [("get_weather", '{"city": "Paris"}')], "tool_calls")),
    "auto-cut": (AUTO, 'On it.<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', LENGTH,
                 ("On it.", [("get_weather", '{"city": "Pa')], "length")),
    "auto-malformed": (AUTO, "<tool_call>{not json}</tool_call> sorry", STOP,
                       ("<tool_call>{not json}</tool_call> sorry", [], "stop")),
    "auto-call": (AUTO, '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>', STOP,
                  ("", [("get_time", "{}")], "tool_calls")),
}


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))


def run(pipeline, spec: OutputSpec, text: str, finish: FinishReason) -> tuple[tuple, tuple]:
    """(streamed, unary) answers of `text`, fed one token at a time, the engine ending it with `finish`."""
    choice = Choice(0, OutputStage(pipeline, spec))
    deltas = [choice.stage.add(LLMEngineOutput(token_ids=[t])) for t in pipeline.tokenizer.encode(text)]
    deltas.append(choice.stage.finish())
    choice.finish = finish
    # The stream: every delta's content and call pieces as generation.py sends them, then the finish chunk.
    calls: dict[int, dict] = {}
    for d in deltas:
        for piece in d.tool_calls:
            accumulate_call(calls, piece)
    streamed = ("".join(d.content for d in deltas),
                [(c["function"]["name"], c["function"]["arguments"]) for _, c in sorted(calls.items())],
                choice.stage.finish_reason(choice.finish))
    for d in deltas:
        collect(choice, d)
    answer = chat_choice(choice, "reasoning_content", None)
    message = answer["message"]
    unary = (message["content"] or "", [(c["function"]["name"], c["function"]["arguments"])
                                        for c in message.get("tool_calls") or []], answer["finish_reason"])
    return streamed, unary


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_chat_answer_is_the_same_streamed_or_unary(pipeline, name):
    spec, text, finish, want = CASES[name]
    streamed, unary = run(pipeline, spec, text, finish)
    assert unary == streamed == want


def test_a_forced_call_cut_short_keeps_its_id_and_a_null_content(pipeline):
    """As OpenAI sends it: `content` null beside the call, the call's id and type as a whole call's."""
    choice = Choice(0, OutputStage(pipeline, NAMED))
    for t in pipeline.tokenizer.encode(TEXT):
        collect(choice, choice.stage.add(LLMEngineOutput(token_ids=[t])))
    collect(choice, choice.stage.finish())
    choice.finish = LENGTH
    message = chat_choice(choice, "reasoning_content", None)["message"]
    [call] = message["tool_calls"]
    assert message["content"] is None and call["id"] and call["type"] == "function"
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["function"]["arguments"])  # what the model wrote, not made up JSON


def test_a_held_framing_answers_a_call_that_never_became_json_with_the_text(pipeline):
    """`runnable` (Responses' and Anthropic's rule, whose streams hold calls until complete): the model's text."""
    choice = Choice(0, OutputStage(pipeline, AUTO))
    text = 'On it.<tool_call>{"name": "get_weather", "arguments": {"city": "Pa'
    for t in pipeline.tokenizer.encode(text):
        collect(choice, choice.stage.add(LLMEngineOutput(token_ids=[t])))
    collect(choice, choice.stage.finish())
    choice.finish = LENGTH
    answer = chat_choice(choice, "reasoning_content", None, runnable=lambda a: a.startswith("{") and a.endswith("}"))
    assert answer["message"] == {"role": "assistant", "content": text} and answer["finish_reason"] == "length"

"""What tools plus a response_format ask of the engine (frontend/tool_guidance.py): with tool_choice auto the
format holds only the final answer, so the engine gets a structural tag admitting that answer or the calls
in the model's own format (what its parser reads back as those calls); a turn that must call a tool is
never held to the answer's schema; a format no grammar here can say gets nothing, said once in the log."""

from __future__ import annotations

import json
import logging

import pytest

from dynamo.frontend import tool_guidance
from dynamo.frontend.openai import decode_request
from dynamo.frontend.parsers import make_tool_parser

ANSWER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PARAMS = {"$defs": {"Zone": {"type": "string"}}, "type": "object", "properties": {"zone": {"$ref": "#/$defs/Zone"}}}
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": PARAMS}},
         {"type": "function", "function": {"name": "get_weather"}}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "R", "strict": True, "schema": ANSWER}}
LAID_OUT = ["hermes", "qwen25", "nemotron_deci", "jamba", "phi4", "llama3_json", "default", None]


def chat(**over):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "response_format": FORMAT}
    return decode_request(json.dumps({**body, **over}).encode(), "chat")


def written(fmt: dict, args: list[tuple[int, dict]]) -> str:
    """Text the structural tag's calls branch admits: the calls `args` ((tool index, arguments)) as written
    between the tag's fixed strings (what the model writes under it)."""
    if fmt["type"] == "tag":  # a listed block around its calls
        return fmt["begin"] + written(fmt["content"], args) + fmt["end"]
    tags = fmt["tags"]
    return fmt["separator"].join(tags[i]["begin"] + json.dumps(a) + tags[i]["end"] for i, a in args)


@pytest.mark.parametrize("tool_format", LAID_OUT)
def test_auto_with_a_response_format_admits_the_answer_or_the_calls_the_parser_reads(tool_format):
    guided = chat().to_request([1], "r", "m", 10, [2], False, tool_format).sampling_options.guided_decoding
    tag = guided.structural_tag
    assert guided.json is None and tag["type"] == "structural_tag" and tag["format"]["type"] == "or"
    answer, calls = tag["format"]["elements"]
    assert answer == {"type": "json_schema", "json_schema": ANSWER}
    parser = make_tool_parser(tool_format or "default", TOOLS)
    content, deltas = parser.feed(written(calls, [(0, {"zone": "CET"}), (1, {})]))
    more, rest = parser.finish()
    got: dict[int, list[str]] = {}
    for d in deltas + rest:
        got.setdefault(d.index, [d.name, ""])[1] += d.arguments
    assert content + more == ""
    assert [(n, json.loads(a)) for n, a in got.values()] == [("get_time", {"zone": "CET"}), ("get_weather", {})]


def test_each_call_is_held_to_its_own_tools_schema_and_one_call_when_not_parallel():
    calls = chat(parallel_tool_calls=False).guided_decoding(True, "hermes").structural_tag["format"]["elements"][1]
    assert calls["at_least_one"] and calls["stop_after_first"]
    assert [t["content"]["json_schema"] for t in calls["tags"]] == [PARAMS, {"type": "object", "properties": {}}]
    assert not chat().guided_decoding(True, "hermes").structural_tag["format"]["elements"][1]["stop_after_first"]
    json_object = chat(response_format={"type": "json_object"}).guided_decoding(True, "hermes")
    assert json_object.structural_tag["format"]["elements"][0]["json_schema"] == {"type": "object"}


def test_a_turn_that_must_call_a_tool_is_not_held_to_the_answers_schema():
    named = {"type": "function", "function": {"name": "get_time"}}
    assert chat(tool_choice=named).guided_decoding(True, "hermes").json == PARAMS
    assert chat(tool_choice="required").guided_decoding(True, "hermes").json["type"] == "array"
    # An engine that writes the model's own format (no grammar, or a model that reasons first): nothing.
    assert chat(tool_choice=named).guided_decoding(False, "hermes") is None
    assert chat(tool_choice="required").guided_decoding(False, "hermes") is None
    # No tools to call: the answer's schema, as before.
    assert chat(tool_choice="none").guided_decoding(True, "hermes").json == ANSWER


def test_a_format_no_grammar_can_say_gets_no_constraint_and_says_so_once(caplog):
    tool_guidance._warned.discard("pythonic")
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.tool_guidance"):
        assert chat().guided_decoding(True, "pythonic") is None
        assert chat().guided_decoding(True, "pythonic") is None
    assert [r.getMessage() for r in caplog.records].count(
        "tool-call format 'pythonic' cannot be written as a grammar: with tools and a response_format, the engine "
        "is held to neither (calls stay possible; the answer is not held to the schema)") == 1


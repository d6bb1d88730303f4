"""What tools plus a response_format ask of the engine (frontend/tool_guidance.py): with tool_choice auto the
format holds only the final answer, so the engine gets a structural tag admitting that answer or the calls
in the model's own format (what its parser reads back as those calls), after room for the reasoning of a
model that reasons first; a turn that must call a tool is never held to the answer's schema; a format or
reasoning no grammar here can say gets nothing, said once in the log."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from dynamo.frontend import tool_guidance
from dynamo.frontend.model_manager import ModelEntry
from dynamo.frontend.openai import decode_request
from dynamo.frontend.parsers import make_tool_parser
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.preparation import wire_requests
from dynamo.frontend.tool_guidance import ReasoningStart
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline

ANSWER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PARAMS = {"$defs": {"Zone": {"type": "string"}}, "type": "object", "properties": {"zone": {"$ref": "#/$defs/Zone"}}}
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": PARAMS}},
         {"type": "function", "function": {"name": "get_weather"}}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "R", "strict": True, "schema": ANSWER}}
LAID_OUT = ["hermes", "qwen25", "nemotron_deci", "jamba", "phi4", "llama3_json", "default", None]
CALLED = [("get_time", {"zone": "CET"}), ("get_weather", {})]
# Formats that name each call in text: the model's own text for CALLED (as its chat template, or DeepSeek's
# encoding script, writes calls). tests/vllm/test_tool_grammars.py checks that the format's tag admits it.
_DSML = ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_time">\n<｜DSML｜parameter name="zone" string="true">'
         'CET</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name="get_weather">\n</｜DSML｜invoke>\n'
         '</｜DSML｜function_calls>')
HEADED = {
    "deepseek_v3": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\"zone\": \"CET\"}"
                    "\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{}\n```"
                    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    "deepseek_v3_1": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{\"zone\": \"CET\"}<｜tool▁call▁end｜>"
                      "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    "kimi_k2": ('<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:0<|tool_call_argument_begin|>'
                '{"zone": "CET"}<|tool_call_end|><|tool_call_begin|>functions.get_weather:1'
                '<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>'),
    "mistral": '[TOOL_CALLS]get_time[ARGS]{"zone": "CET"}[TOOL_CALLS]get_weather[ARGS]{}',
    "qwen3_coder": ("<tool_call>\n<function=get_time>\n<parameter=zone>\nCET\n</parameter>\n</function>\n</tool_call>\n"
                    "<tool_call>\n<function=get_weather>\n</function>\n</tool_call>"),
    "glm45": ("<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>CET</arg_value>\n</tool_call>\n"
              "<tool_call>get_weather\n</tool_call>"),
    "glm47": ("<tool_call>get_time<arg_key>zone</arg_key><arg_value>CET</arg_value></tool_call>"
              "<tool_call>get_weather</tool_call>"),
    "minimax_m2": ('<minimax:tool_call>\n<invoke name="get_time">\n<parameter name="zone">CET</parameter>\n</invoke>\n'
                   '<invoke name="get_weather">\n</invoke>\n</minimax:tool_call>'),
    "deepseek_v3_2": _DSML,
    "deepseek_v4": _DSML.replace("function_calls", "tool_calls"),
}
HEADED["mistral_list"] = ('[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "CET"}}, '
                          '{"name": "get_weather", "arguments": {}}]')  # Mistral's older tokenizers' form
HEADED["nemotron_nano"] = HEADED["qwen3_coder"]


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
    assert read(tool_format or "default", written(calls, [(0, {"zone": "CET"}), (1, {})])) == ("", CALLED)


def read(tool_format: str, text: str) -> tuple[str, list[tuple[str, dict]]]:
    """What our parser makes of `text`: its plain content and the calls (name, arguments)."""
    parser = make_tool_parser(tool_format, TOOLS)
    content, deltas = parser.feed(text)
    more, rest = parser.finish()
    got: dict[int, list[str]] = {}
    for d in deltas + rest:
        got.setdefault(d.index, [d.name, ""])[1] += d.arguments
    return content + more, [(n, json.loads(a)) for n, a in got.values()]


def tag_strings(fmt: dict) -> list[str]:
    """The fixed strings of a structural tag's calls branch, in order (`{index}`'s number left out)."""
    if fmt["type"] == "or":
        return [s for e in fmt["elements"] for s in tag_strings(e)]
    if fmt["type"] == "tags_with_separator":
        return [s for t in fmt["tags"] for s in tag_strings(t)]
    if fmt["type"] == "sequence":
        return [e["value"] for e in fmt["elements"] if e["type"] == "const_string"]
    if fmt["type"] == "tag":
        return [fmt["begin"], *tag_strings(fmt["content"]), fmt["end"]]
    return []


@pytest.mark.parametrize("tool_format", sorted(HEADED))
def test_a_format_naming_its_calls_in_text_gets_a_tag_of_its_own_strings_that_the_parser_reads_back(tool_format):
    text = HEADED[tool_format]
    fmt = tool_format.replace("_list", "")
    assert read(fmt, text) == ("", CALLED)
    tag = chat().guided_decoding(True, fmt).structural_tag
    answer, calls = tag["format"]["elements"]
    assert answer == {"type": "json_schema", "json_schema": ANSWER}
    calls = calls["elements"][tool_format == "mistral_list"] if fmt == "mistral" else calls
    assert all(s in text for s in tag_strings(calls)), [s for s in tag_strings(calls) if s not in text]


def test_deepseeks_tag_heads_each_call_with_its_name_and_kimis_leaves_the_model_its_call_count():
    calls = chat().guided_decoding(True, "deepseek_v3").structural_tag["format"]["elements"][1]
    per_call = [{"type": "tag", "begin": f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n",
                 "content": {"type": "json_schema", "json_schema": schema}, "end": "\n```<｜tool▁call▁end｜>"}
                for name, schema in (("get_time", PARAMS), ("get_weather", {"type": "object", "properties": {}}))]
    assert calls == {"type": "tag", "begin": "<｜tool▁calls▁begin｜>", "end": "<｜tool▁calls▁end｜>", "content": {
        "type": "tags_with_separator", "tags": per_call, "separator": "\n", "at_least_one": True,
        "stop_after_first": False}}
    kimi = chat(parallel_tool_calls=False).guided_decoding(True, "kimi_k2").structural_tag["format"]["elements"][1]
    first = kimi["content"]["tags"][0]
    assert kimi["content"]["stop_after_first"] and first["begin"] == "<|tool_call_begin|>functions.get_time:"
    assert first["content"] == {"type": "sequence", "elements": [
        {"type": "regex", "pattern": "[0-9]+"}, {"type": "const_string", "value": "<|tool_call_argument_begin|>"},
        {"type": "json_schema", "json_schema": PARAMS}]}
    qwen = chat().guided_decoding(True, "qwen3_coder").structural_tag["format"]["elements"][1]
    assert qwen["tags"][0]["content"] == {"type": "json_schema", "json_schema": PARAMS, "style": "qwen_xml"}


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


@pytest.mark.parametrize("tool_format", ["pythonic", "harmony", "gemma4", "inkling", "minimax_m3"])
def test_a_format_no_grammar_can_say_gets_no_constraint_and_says_so_once(caplog, tool_format):
    tool_guidance._warned.discard(f"tool-call format {tool_format!r}")
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.tool_guidance"):
        assert chat().guided_decoding(True, tool_format) is None
        assert chat().guided_decoding(True, tool_format) is None
    assert [r.getMessage() for r in caplog.records].count(
        f"tool-call format {tool_format!r} cannot be written as a grammar: with tools and a response_format, the "
        "engine is held to neither (calls stay possible; the answer is not held to the schema)") == 1



LAYOUT = {"type": "regex", "pattern": "[ \\t\\r\\n]*"}


def think(*begins: str, ends=("</think>",)) -> dict:
    tags = [{"type": "tag", "begin": b, "content": {"type": "any_text"}, "end": list(ends)} for b in begins]
    first = tags[0] if len(tags) == 1 else {"type": "or", "elements": tags}
    return {"type": "optional", "content": {"type": "sequence", "elements": [first, LAYOUT]}}


@pytest.mark.parametrize("parser,prompt,section", [
    ("qwen3", PromptReasoning.UNKNOWN, think("<think>")),
    # The template opened it (Qwen3 thinking-2507, GLM-4.7): the output starts inside, opening tag or not.
    ("qwen3", PromptReasoning.OPENED, think("")),
    ("deepseek_r1", PromptReasoning.UNKNOWN, think("")),  # a model that always starts inside
    ("mistral", PromptReasoning.UNKNOWN, think("", ends=("[/THINK]", "</think>"))),
    ("granite", PromptReasoning.UNKNOWN, think("Here is my thought process:", "Here's my thought process:",
                                               ends=("Here is my response:", "Here's my response:"))),
    ("qwen3", PromptReasoning.CLOSED, None),  # thinking switched off: the answer or the calls at once
    ("deepseek_r1", PromptReasoning.CLOSED, None),
])
def test_a_model_that_reasons_first_gets_room_for_its_reasoning_before_the_answer_or_the_calls(
        parser, prompt, section):
    plain = chat().guided_decoding(True, "hermes").structural_tag
    tag = chat().guided_decoding(True, "hermes", ReasoningStart(parser, prompt)).structural_tag
    if section is None:
        assert tag == plain
    else:
        assert tag == {"type": "structural_tag", "format": {"type": "sequence",
                                                            "elements": [section, plain["format"]]}}


def test_reasoning_no_grammar_can_say_gets_no_constraint_and_says_so_once(caplog):
    for name in ("gpt_oss", "minimax_append_think"):
        tool_guidance._warned.discard(f"reasoning parser {name!r}")
    with caplog.at_level(logging.WARNING, logger="dynamo.frontend.tool_guidance"):
        for name in ("gpt_oss", "minimax_append_think", "gpt_oss"):
            assert chat().guided_decoding(True, "hermes", ReasoningStart(name)) is None
    assert [r.getMessage().split(" cannot")[0] for r in caplog.records] == [
        "reasoning parser 'gpt_oss'", "reasoning parser 'minimax_append_think'"]


@pytest.mark.parametrize("prompt_end,begin", [("", "<think>"), ("<think>\n", ""), ("<think>\n\n</think>\n\n", None)])
def test_the_wire_request_carries_the_cards_reasoning_where_the_prompt_left_it(tiny_model, prompt_end, begin):
    """Qwen3 (hermes calls, qwen3 reasoning): the card's reasoning parser reaches the structural tag, with
    the prompt's end judged as the output stage judges it."""
    card = build_card(tiny_model, name="tiny", block_size=16)
    card.runtime_config.reasoning_parser, card.runtime_config.tool_call_parser = "qwen3", "hermes"
    entry = ModelEntry("tiny", ModelPipeline(card), card)
    req = decode_request(msgspec.json.encode({"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                              "tools": TOOLS, "response_format": FORMAT}), "chat")
    prompt = entry.pipeline.tokenizer.encode("<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n" + prompt_end)
    (wire,) = wire_requests(entry.pipeline, req, prompt, True)
    fmt = wire.sampling_options.guided_decoding.structural_tag["format"]
    if begin is None:
        assert fmt["type"] == "or"
    else:
        assert fmt["type"] == "sequence" and fmt["elements"][0] == think(begin)

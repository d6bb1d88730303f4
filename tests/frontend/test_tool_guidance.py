"""What tools plus a response_format ask of the engine (frontend/tool_guidance.py): with tool_choice auto the
format holds only the final answer, so the engine gets a structural tag admitting that answer or the calls
in the model's own format (what its parser reads back as those calls, its arguments typed as the tool's schema
says), after room for the reasoning of a model that reasons first and a little layout whitespace; a turn that
must call a tool is never held to the answer's schema; a format or reasoning no grammar here can say gets
nothing, said once in the log."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from dynamo.frontend import tool_guidance
from dynamo.frontend.model_entry import ModelEntry
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
LAYOUT = {"type": "regex", "pattern": "[ \\t\\r\\n]{0,8}"}
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

# A tool whose parameters are of every kind (as pydantic writes Optional[int] and a nested model), and its call
# as each tagged-parameter format writes it (xgrammar's XML styles: a string as raw text, every other kind as
# JSON; DSML flags each value string="true" or "false" as DeepSeek's encoding script does). TYPED_ARGS is what
# our parser reads back; tests/vllm/test_tool_grammars.py checks that each format's tag admits these texts.
PLAN_PARAMS = {
    "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                        "required": ["x", "y"]}, "Zone": {"type": "string"}},
    "type": "object", "properties": {
        "count": {"type": "integer"}, "ratio": {"type": "number"}, "fast": {"type": "boolean"},
        "note": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "spot": {"$ref": "#/$defs/Point"}, "level": {"enum": [1, 2]}, "mode": {"const": 3},
        "tags": {"type": "array", "items": {"type": "string"}}, "label": {"type": ["string", "null"]},
        "name": {"type": "string"}, "zone": {"$ref": "#/$defs/Zone"}, "unit": {"enum": ["1", "2"]},
        "free": {"description": "anything"}, "blob": {"title": "Blob"}},
    "required": ["count", "ratio", "fast", "note", "limit", "spot", "level", "mode", "tags", "label", "name", "zone",
                 "unit", "free", "blob"]}
PLAN_TOOLS = [{"type": "function", "function": {"name": "plan", "parameters": PLAN_PARAMS}}]
# (parameter, its text, whether a string), in the schema's order; strings that read as JSON stay strings, and a
# parameter whose schema says nothing is text or a JSON array or object (xgrammar's XML styles have no other).
TYPED_VALUES = [("count", "3", False), ("ratio", "2.5", False), ("fast", "true", False), ("note", "null", False),
                ("limit", "5", False), ("spot", '{"x": 1, "y": -2}', False), ("level", "2", False),
                ("mode", "3", False), ("tags", '["a", "b"]', False), ("label", "null", False),
                ("name", "007", True), ("zone", "null", True), ("unit", "2", True), ("free", "7", True),
                ("blob", '{"k": [1]}', False)]
TYPED_ARGS = {"count": 3, "ratio": 2.5, "fast": True, "note": None, "limit": 5, "spot": {"x": 1, "y": -2},
              "level": 2, "mode": 3, "tags": ["a", "b"], "label": None, "name": "007", "zone": "null", "unit": "2",
              "free": "7", "blob": {"k": [1]}}


def tagged_call(tool_format: str, values: list[tuple[str, str, bool]]) -> str:
    """A call of `plan` with `values` as `tool_format`'s model writes it."""
    if tool_format in ("qwen3_coder", "nemotron_nano"):
        body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v, _ in values)
        return f"<tool_call>\n<function=plan>\n{body}</function>\n</tool_call>"
    if tool_format == "minimax_m2":
        body = "".join(f'<parameter name="{k}">{v}</parameter>\n' for k, v, _ in values)
        return f'<minimax:tool_call>\n<invoke name="plan">\n{body}</invoke>\n</minimax:tool_call>'
    if tool_format in ("glm45", "glm47"):
        gap = "\n" if tool_format == "glm45" else ""
        body = "".join(f"<arg_key>{k}</arg_key>{gap}<arg_value>{v}</arg_value>{gap}" for k, v, _ in values)
        return f"<tool_call>plan{gap}{body}</tool_call>"
    block = "function_calls" if tool_format == "deepseek_v3_2" else "tool_calls"
    body = "".join(f'<｜DSML｜parameter name="{k}" string="{str(s).lower()}">{v}</｜DSML｜parameter>\n'
                   for k, v, s in values)
    return f'<｜DSML｜{block}>\n<｜DSML｜invoke name="plan">\n{body}</｜DSML｜invoke>\n</｜DSML｜{block}>'


TAGGED = ["qwen3_coder", "nemotron_nano", "minimax_m2", "glm45", "glm47", "deepseek_v3_2", "deepseek_v4"]
# Layout the models write ahead of their calls (DeepSeek V3.2/V4 `\n\n`, GLM-4.5's template `\n`), and the JSON
# list Mistral's template writes after a space for its SentencePiece tokenizers: the same calls, no content.
SPACED = {"deepseek_v3_2": "\n\n" + HEADED["deepseek_v3_2"], "deepseek_v4": "\n\n" + HEADED["deepseek_v4"],
          "glm45": "\n" + HEADED["glm45"],
          "mistral_list": HEADED["mistral_list"].replace("[TOOL_CALLS][", "[TOOL_CALLS] [")}


def chat(**over):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "response_format": FORMAT}
    return decode_request(json.dumps({**body, **over}).encode(), "chat")


def answer_and_calls(tag: dict) -> list[dict]:
    """The structural tag's two branches, after the layout whitespace it admits ahead of either."""
    fmt = tag["format"]
    assert fmt["type"] == "sequence" and fmt["elements"][-2] == LAYOUT and fmt["elements"][-1]["type"] == "or"
    return fmt["elements"][-1]["elements"]


def written(fmt: dict, args: list[tuple[int, dict]]) -> str:
    """Text the structural tag's calls branch admits: the calls `args` ((tool index, arguments)) as written
    between the tag's fixed strings (what the model writes under it; an optional space left out)."""
    if fmt["type"] == "sequence":  # a listed block's marker, then its list
        return "".join(e["value"] if e["type"] == "const_string" else written(e, args) if e["type"] == "tag"
                       else "" for e in fmt["elements"])
    if fmt["type"] == "tag":  # a listed block around its calls
        return fmt["begin"] + written(fmt["content"], args) + fmt["end"]
    tags = fmt["tags"]
    return fmt["separator"].join(tags[i]["begin"] + json.dumps(a) + tags[i]["end"] for i, a in args)


@pytest.mark.parametrize("tool_format", LAID_OUT)
def test_auto_with_a_response_format_admits_the_answer_or_the_calls_the_parser_reads(tool_format):
    guided = chat().to_request([1], "r", "m", 10, [2], False, tool_format).sampling_options.guided_decoding
    tag = guided.structural_tag
    assert guided.json is None and tag["type"] == "structural_tag"
    answer, calls = answer_and_calls(tag)
    assert answer == {"type": "json_schema", "json_schema": ANSWER}
    assert read(tool_format or "default", written(calls, [(0, {"zone": "CET"}), (1, {})])) == ("", CALLED)


def read(tool_format: str, text: str, tools: list[dict] = TOOLS, step: int | None = None
         ) -> tuple[str, list[tuple[str, dict]]]:
    """What our parser makes of `text` (fed whole, or `step` characters at a time): its plain content and the
    calls (name, arguments). Content never opens with a piece of whitespace alone (ahead of calls, layout)."""
    parser = make_tool_parser(tool_format, tools)
    pieces = [text] if step is None else [text[i:i + step] for i in range(0, len(text), step)]
    shown, deltas = [], []
    for piece in pieces:
        content, more = parser.feed(piece)
        shown.append(content)
        deltas += more
    content, rest = parser.finish()
    shown.append(content)
    assert next((c for c in shown if c), "x").strip(), shown
    got: dict[int, list[str]] = {}
    for d in deltas + rest:
        got.setdefault(d.index, [d.name, ""])[1] += d.arguments
    return "".join(shown), [(n, json.loads(a)) for n, a in got.values()]


def tag_strings(fmt: dict) -> list[str]:
    """The fixed strings of a structural tag's calls branch, in order (`{index}`'s number left out)."""
    if fmt["type"] == "or":
        return [s for e in fmt["elements"] for s in tag_strings(e)]
    if fmt["type"] == "tags_with_separator":
        return [s for t in fmt["tags"] for s in tag_strings(t)]
    if fmt["type"] == "sequence":
        return [s for e in fmt["elements"] for s in ([e["value"]] if e["type"] == "const_string" else tag_strings(e))]
    if fmt["type"] == "tag":
        return [fmt["begin"], *tag_strings(fmt["content"]), fmt["end"]]
    return []


@pytest.mark.parametrize("tool_format", sorted(HEADED))
def test_a_format_naming_its_calls_in_text_gets_a_tag_of_its_own_strings_that_the_parser_reads_back(tool_format):
    text = HEADED[tool_format]
    fmt = tool_format.replace("_list", "")
    assert read(fmt, text) == ("", CALLED)
    tag = chat().guided_decoding(True, fmt).structural_tag
    answer, calls = answer_and_calls(tag)
    assert answer == {"type": "json_schema", "json_schema": ANSWER}
    calls = calls["elements"][tool_format == "mistral_list"] if fmt == "mistral" else calls
    assert all(s in text for s in tag_strings(calls)), [s for s in tag_strings(calls) if s not in text]


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("tool_format", TAGGED)
def test_tagged_parameters_are_read_back_typed_as_their_schema_says(tool_format, step):
    """xgrammar's XML styles hold each value to its parameter's schema and write JSON for all but strings: null,
    Optional[int], a nested model behind a `$ref`, an enum or a const of numbers come back as those JSON values;
    a string (plain, behind a `$ref`, an enum of strings) stays the text written, even where it reads as JSON."""
    assert read(tool_format, tagged_call(tool_format, TYPED_VALUES), PLAN_TOOLS, step) == ("", [("plan", TYPED_ARGS)])


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("tool_format", sorted(SPACED))
def test_layout_the_model_writes_ahead_of_its_calls_is_admitted_and_never_shown(tool_format, step):
    """DeepSeek V3.2/V4 write `\n\n` before their calls, GLM-4.5's template `\n`, Mistral's `[TOOL_CALLS] [`: the
    same calls, and no content (not even a whitespace delta streamed ahead of them); the tag admits the layout
    ahead of either branch (the grammar check is tests/vllm/test_tool_grammars.py)."""
    fmt = tool_format.replace("_list", "")
    assert read(fmt, SPACED[tool_format], step=step) == ("", CALLED)
    assert chat().guided_decoding(True, fmt).structural_tag["format"]["elements"][0] == LAYOUT


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("tool_format", ["deepseek_v3_2", "glm45", "hermes"])
def test_whitespace_opening_an_answer_or_a_block_that_is_no_call_stays_with_it(tool_format, step):
    assert read(tool_format, '\n\n{"city": "Oslo"}', step=step) == ('\n\n{"city": "Oslo"}', [])
    broken = {"deepseek_v3_2": "<｜DSML｜function_calls></｜DSML｜function_calls>", "glm45": "<tool_call>  </tool_call>",
              "hermes": "<tool_call>not json</tool_call>"}[tool_format]
    assert read(tool_format, "\n" + broken + " after", step=step) == ("\n" + broken + " after", [])
    parser = make_tool_parser(tool_format, TOOLS)  # output that is only whitespace is the answer as written
    assert (parser.feed(" \n"), parser.finish()) == (("", []), (" \n", []))


def test_deepseeks_tag_heads_each_call_with_its_name_and_kimis_leaves_the_model_its_call_count():
    calls = answer_and_calls(chat().guided_decoding(True, "deepseek_v3").structural_tag)[1]
    per_call = [{"type": "tag", "begin": f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n",
                 "content": {"type": "json_schema", "json_schema": schema}, "end": "\n```<｜tool▁call▁end｜>"}
                for name, schema in (("get_time", PARAMS), ("get_weather", {"type": "object", "properties": {}}))]
    assert calls == {"type": "tag", "begin": "<｜tool▁calls▁begin｜>", "end": "<｜tool▁calls▁end｜>", "content": {
        "type": "tags_with_separator", "tags": per_call, "separator": "\n", "at_least_one": True,
        "stop_after_first": False}}
    kimi = answer_and_calls(chat(parallel_tool_calls=False).guided_decoding(True, "kimi_k2").structural_tag)[1]
    first = kimi["content"]["tags"][0]
    assert kimi["content"]["stop_after_first"] and first["begin"] == "<|tool_call_begin|>functions.get_time:"
    assert first["content"] == {"type": "sequence", "elements": [
        {"type": "regex", "pattern": "[0-9]+"}, {"type": "const_string", "value": "<|tool_call_argument_begin|>"},
        {"type": "json_schema", "json_schema": PARAMS}]}
    qwen = answer_and_calls(chat().guided_decoding(True, "qwen3_coder").structural_tag)[1]
    assert qwen["tags"][0]["content"] == {"type": "json_schema", "json_schema": PARAMS, "style": "qwen_xml"}


def test_each_call_is_held_to_its_own_tools_schema_and_one_call_when_not_parallel():
    calls = answer_and_calls(chat(parallel_tool_calls=False).guided_decoding(True, "hermes").structural_tag)[1]
    assert calls["at_least_one"] and calls["stop_after_first"]
    assert [t["content"]["json_schema"] for t in calls["tags"]] == [PARAMS, {"type": "object", "properties": {}}]
    assert not answer_and_calls(chat().guided_decoding(True, "hermes").structural_tag)[1]["stop_after_first"]
    json_object = chat(response_format={"type": "json_object"}).guided_decoding(True, "hermes")
    assert answer_and_calls(json_object.structural_tag)[0]["json_schema"] == {"type": "object"}


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


def think(*begins: str, ends=("</think>",)) -> dict:
    tags = [{"type": "tag", "begin": b, "content": {"type": "any_text"}, "end": list(ends)} for b in begins]
    return {"type": "optional", "content": tags[0] if len(tags) == 1 else {"type": "or", "elements": tags}}


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
    assert plain["format"]["elements"][0] == LAYOUT  # the answer or the calls, after layout whitespace
    if section is None:
        assert tag == plain
    else:
        assert tag == {"type": "structural_tag", "format": {"type": "sequence",
                                                            "elements": [section, *plain["format"]["elements"]]}}


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
    assert fmt["type"] == "sequence" and fmt["elements"][0] == (LAYOUT if begin is None else think(begin))

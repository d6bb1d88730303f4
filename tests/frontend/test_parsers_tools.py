"""Tool-call parsers, one vector per model family's documented format, fed whole and
one character at a time (every marker split across feeds), plus malformed output."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.parsers import make_tool_parser

WEATHER = {"city": "Paris", "unit": "celsius"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]


def run(name: str, text: str, step: int | None, tools: list[dict] | None = TOOLS) -> tuple[str, list[dict]]:
    """Feed `text` in pieces of `step` characters (None: whole); returns (content, calls)."""
    parser = make_tool_parser(name, tools)
    pieces = [text] if step is None else [text[i:i + step] for i in range(0, len(text), step)]
    content, deltas = [], []
    for piece in pieces:
        c, d = parser.feed(piece)
        content.append(c)
        deltas.extend(d)
    c, d = parser.finish()
    content.append(c)
    deltas.extend(d)
    calls: dict[int, dict] = {}
    for delta in deltas:
        call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
        if delta.id is not None:
            assert call["id"] is None, "a call's id is sent once"
            call["id"], call["name"] = delta.id, delta.name
        else:
            assert call["name"] is not None, "arguments never precede the name"
        call["arguments"] += delta.arguments
    return "".join(content), [calls[i] for i in sorted(calls)]


# MiniMax M3's namespace token, in front of every one of its tags.
NS = "]<]minimax[>["


def m3_block(*invokes: str) -> str:
    return f"{NS}<tool_call>\n" + "\n".join(invokes) + f"\n{NS}</tool_call>"


def m3_invoke(head: str, *params: str) -> str:
    """`head` is the invoke's attributes, e.g. `name="get_weather"`."""
    return f"{NS}<invoke {head}>" + "".join(params) + f"{NS}</invoke>"


def m3_tag(name: str, value: str) -> str:
    return f"{NS}<{name}>{value}{NS}</{name}>"


CASES = {
    "hermes": ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
               '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
               "Let me check.", [("get_weather", WEATHER), ("get_time", {})]),
    "llama3_json": ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
                    '{"name": "get_time", "parameters": {}}',
                    "", [("get_weather", WEATHER), ("get_time", {})]),
    "mistral": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
                '{"name": "get_time", "arguments": {}}]', "", [("get_weather", WEATHER), ("get_time", {})]),
    "default": ('Sure <TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]'
                '</TOOLCALL>', "Sure ", [("get_weather", WEATHER)]),
    "pythonic": ('[get_weather(city="Paris", unit="celsius"), get_time()]', "",
                 [("get_weather", WEATHER), ("get_time", {})]),
    "qwen3_coder": ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", "",
                    [("get_weather", {"city": "Paris", "days": 3})]),
    "deepseek_v3": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                    '{"city": "Paris", "unit": "celsius"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function'
                    "<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "",
                    [("get_weather", WEATHER), ("get_time", {})]),
    "harmony": ("<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                '{"city": "Paris", "unit": "celsius"}<|call|>', "", [("get_weather", WEATHER)]),
    "nemotron_deci": ('<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
                      '{"name": "get_time", "arguments": {}}]</TOOLCALL>', "",
                      [("get_weather", WEATHER), ("get_time", {})]),
    "jamba": ('<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]</tool_calls>',
              "", [("get_weather", WEATHER)]),
    "phi4": ('functools[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
             '{"name": "get_time", "arguments": {}}]', "", [("get_weather", WEATHER), ("get_time", {})]),
    "deepseek_v3_1": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
                      '{"city": "Paris", "unit": "celsius"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time'
                      "<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "",
                      [("get_weather", WEATHER), ("get_time", {})]),
    "kimi_k2": ("I'll check. <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                '<|tool_call_argument_begin|>{"city": "Paris", "unit": "celsius"}<|tool_call_end|>'
                "<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|>"
                "<|tool_calls_section_end|>", "I'll check. ", [("get_weather", WEATHER), ("get_time", {})]),
    "glm45": ("Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
              "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n<tool_call>get_time\n</tool_call>",
              "Let me check.\n", [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]),
    "glm47": ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key>"
              "<arg_value>celsius</arg_value></tool_call><tool_call>get_time</tool_call>", "",
              [("get_weather", WEATHER), ("get_time", {})]),
    "minimax_m2": ('<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
                   '<parameter name="days">3</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n'
                   "</minimax:tool_call>", "", [("get_weather", {"city": "Paris", "days": 3}), ("get_time", {})]),
    "deepseek_v3_2": ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" '
                      'string="true">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name="unit" string="true">celsius'
                      '</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n'
                      "</｜DSML｜function_calls>", "", [("get_weather", WEATHER), ("get_time", {})]),
    "deepseek_v4": ('<｜DSML｜tool_calls><｜DSML｜invoke name="get_weather"><｜DSML｜parameter name="city" string="true">'
                    'Paris</｜DSML｜parameter><｜DSML｜parameter name="unit" string="true">celsius</｜DSML｜parameter>'
                    '</｜DSML｜invoke><｜DSML｜invoke name="get_time"></｜DSML｜invoke></｜DSML｜tool_calls>', "",
                    [("get_weather", WEATHER), ("get_time", {})]),
    "gemma4": ('Checking. <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,unit:<|"|>celsius<|"|>}<tool_call|>'
               "<|tool_call>call:get_time{}<tool_call|>", "Checking. ", [("get_weather", WEATHER), ("get_time", {})]),
    "minimax_m3": ("Checking. " + m3_block(m3_invoke('name="get_weather"', m3_tag("city", "Paris"),
                                                    m3_tag("unit", "celsius")), m3_invoke('name="get_time"')),
                   "Checking. ", [("get_weather", WEATHER), ("get_time", {})]),
    "nemotron_nano": ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                      "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>", "",
                      [("get_weather", {"city": "Paris", "days": 3})]),
}
# Formats whose calls carry the model's own ids (its chat template expects them back).
MODEL_IDS = {"kimi_k2": ["functions.get_weather:0", "functions.get_time:1"]}


@pytest.mark.parametrize("step", [None, 1, 3, 7])
@pytest.mark.parametrize("name", sorted(CASES))
def test_documented_format(name, step):
    text, want_content, want_calls = CASES[name]
    content, calls = run(name, text, step)
    assert content == want_content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == want_calls
    if name in MODEL_IDS:
        assert [c["id"] for c in calls] == MODEL_IDS[name]
    else:
        assert all(c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name", sorted(set(CASES) - {"harmony"}))  # harmony: whitespace outside its messages
def test_whitespace_opening_the_output_is_layout_before_a_call_and_kept_before_text(name, step):
    """DeepSeek V3.2/V4 write `\n\n` before their calls, GLM-4.5 `\n`: ahead of a call it is layout, never
    shown (so never streamed as a content delta of its own); ahead of text it is that text's."""
    text, want_content, want_calls = CASES[name]
    content, calls = run(name, "\n\n" + text, step)
    assert content == ("\n\n" + want_content if want_content else "")
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == want_calls


def test_arguments_stream_before_the_call_closes():
    parser = make_tool_parser("hermes")
    _, first = parser.feed('<tool_call>{"name": "get_weather", "arguments": {"city": "Pa')
    assert [d.name for d in first if d.name] == ["get_weather"]
    assert "".join(d.arguments for d in first) == '{"city": "Pa'
    _, more = parser.feed('ris"}}</tool_call>')
    assert "".join(d.arguments for d in more) == 'ris"}'


def test_mistral_name_args_form():
    content, calls = run("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}', 2)
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                       ("get_time", {})]


def test_plain_text_passes_through_and_near_markers_are_released():
    for name in CASES:
        text = "The answer is 42 < 43 and [x] {y}" if name not in ("pythonic", "llama3_json") else "Hi <tool"
        content, calls = run(name, text, 1)
        assert (content, calls) == (text, []), name


@pytest.mark.parametrize("text", ['{"name": "Bob", "age": 30}', '{"age": 30, "name": "Bob"}',
                                  '{"name": "Bob", "parameters": {"age": 30}}'])
def test_a_llama3_json_answer_naming_no_offered_tool_is_the_answer(text):
    """llama3_json's calls are bare objects, so an answer in JSON (a response_format's, which the engine
    admits beside the calls) whose "name" is no offered tool is text, not a call of "Bob"."""
    for step in (None, 1):
        assert run("llama3_json", text, step) == (text, [])
    # Only the object that opens the output is judged: a call's followers are as the model wrote them.
    calls = run("llama3_json", '{"name": "get_weather", "parameters": {}}; {"name": "get_time", "parameters": {}}', 1)
    assert calls[0] == "" and [c["name"] for c in calls[1]] == ["get_weather", "get_time"]


@pytest.mark.parametrize("name,text", [
    ("hermes", "<tool_call>not json at all</tool_call> after"),
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),
    ("llama3_json", '{"not": "a call"}'),
    ("pythonic", "[1, 2, 3] are numbers"),
    ("mistral", "[TOOL_CALLS]!!"),
    ("glm45", "<tool_call>  </tool_call> after"),
    ("glm45", "\n<tool_call>  </tool_call> after"),  # the whitespace ahead of a block that is no call is kept
    ("hermes", "\n\n<tool_call>not json at all</tool_call> after"),
    ("nemotron_deci", "<TOOLCALL>no json</TOOLCALL>"),
])
def test_malformed_output_degrades_to_content(name, text):
    for step in (None, 1):
        content, calls = run(name, text, step)
        assert calls == []
        assert content == text


def test_truncated_call_keeps_what_arrived():
    content, calls = run("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', 1)
    assert content == "" and calls[0]["name"] == "get_weather"
    assert calls[0]["arguments"] == '{"city": "Pa'


def test_unknown_parser_is_an_error():
    with pytest.raises(ValueError, match="unknown tool-call parser"):
        make_tool_parser("nope")


@pytest.mark.parametrize("name,text,content,calls", [
    ("pythonic", '<|python_start|>[get_weather(city="Paris", unit="celsius")]<|python_end|>', "",
     [("get_weather", WEATHER)]),
    ("default", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', "",
     [("get_weather", WEATHER)]),
    ("harmony", "<|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>", "It is sunny.", []),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>', "",
     [("get_weather", {"city": "Paris"})]),
])
@pytest.mark.parametrize("step", [None, 1])
def test_other_documented_forms(name, text, content, calls, step):
    got_content, got = run(name, text, step)
    assert got_content == content
    assert [(c["name"], json.loads(c["arguments"])) for c in got] == calls


@pytest.mark.parametrize("step", [None, 1])
def test_tagged_values_follow_the_schema_or_the_format_flag(step):
    # DSML: `string="false"` decodes whatever the schema says; `string="true"` keeps text.
    text = ('<｜DSML｜function_calls><｜DSML｜invoke name="get_weather"><｜DSML｜parameter name="days" string="false">'
            '[1, 2]</｜DSML｜parameter><｜DSML｜parameter name="city" string="true">42</｜DSML｜parameter>'
            "</｜DSML｜invoke></｜DSML｜function_calls>")
    assert [(c["name"], json.loads(c["arguments"])) for c in run("deepseek_v3_2", text, step)[1]] == [
        ("get_weather", {"days": [1, 2], "city": "42"})]
    # GLM and MiniMax: the schema types them; a value that does not decode stays text.
    text = ("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>\n<arg_key>days</arg_key>\n"
            "<arg_value>soon</arg_value>\n<arg_key>extra</arg_key>\n<arg_value>{\"a\": 1}</arg_value>\n</tool_call>")
    assert [(c["name"], json.loads(c["arguments"])) for c in run("glm45", text, step)[1]] == [
        ("get_weather", {"city": "123", "days": "soon", "extra": '{"a": 1}'})]
    text = '<minimax:tool_call><invoke name=get_weather><parameter name=days>7</parameter></invoke></minimax:tool_call>'
    assert [(c["name"], json.loads(c["arguments"])) for c in run("minimax_m2", text, step)[1]] == [
        ("get_weather", {"days": 7})]


@pytest.mark.parametrize("step", [None, 1])
def test_kimi_sections_singular_and_unterminated(step):
    text = ("<|tool_call_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
            '{"city": "Paris"}<|tool_call_end|><|tool_call_section_end|> done')
    content, calls = run("kimi_k2", text, step)
    # (whitespace right after a call is layout: streamed piecewise it is dropped)
    assert (content.strip(), [(c["id"], c["name"]) for c in calls]) == ("done", [("functions.get_weather:0",
                                                                                  "get_weather")])
    # Cut off before the section closes: the complete call is kept.
    content, calls = run("kimi_k2", text.split("<|tool_call_section_end|>")[0], step)
    assert (content, [json.loads(c["arguments"]) for c in calls]) == ("", [{"city": "Paris"}])


def test_tagged_names_are_sent_before_the_arguments_close():
    parser = make_tool_parser("glm47", TOOLS)
    _, first = parser.feed("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Pa")
    assert [(d.name, d.arguments) for d in first] == [("get_weather", "")]
    _, more = parser.feed("ris</arg_value>")
    assert "".join(d.arguments for d in more) == '{"city": "Paris"'
    _, last = parser.feed("</tool_call>")
    assert "".join(d.arguments for d in last) == "}"


@pytest.mark.parametrize("step", [None, 1])
def test_gemma4_object_notation_becomes_json(step):
    text = ('<|tool_call>call:plan{city:<|"|>Paris, {the} "capital"<|"|>,days:-3,ratio:0.5,ok:True,none:nil,'
            'empty:,stops:[<|"|>a<|"|>, 2, {at:1}],opts:{deep:{x:null}}}<tool_call|>')
    assert [(c["name"], json.loads(c["arguments"])) for c in run("gemma4", text, step)[1]] == [
        ("plan", {"city": 'Paris, {the} "capital"', "days": -3, "ratio": 0.5, "ok": True, "none": None, "empty": "",
                  "stops": ["a", 2, {"at": 1}], "opts": {"deep": {"x": None}}})]
    # Not this notation, or cut off before the end marker: the answer keeps what the model wrote.
    for text in ('<|tool_call>call:f{x:<|"|>open}<tool_call|>', "<|tool_call>call:f{x:1", "<|tool_call>print(1)<tool_call|>"):
        content, calls = run("gemma4", text, step)
        assert calls == [] and content == text


M3_TOOLS = [{"type": "function", "function": {"name": "plan", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "ok": {"type": "boolean"}, "ratio": {"type": "number"},
    "unit": {"enum": ["1", "2"]}, "note": {"type": ["string", "null"]}, "tags": {"type": "string"},
    "opts": {"type": "object", "properties": {"n": {"type": "integer"}, "deep": {"type": "object"}}},
    "ids": {"type": "array", "items": {"type": "integer"}},
    "stops": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
        "type": "object", "properties": {"at": {"type": "integer"}, "name": {"type": "string"}}}}]},
    "flags": {"type": "object", "additionalProperties": {"type": "boolean"}}}}}}]


def m3_run(text: str, step: int | None, tools: list[dict] | None = M3_TOOLS) -> tuple[str, list[tuple[str, dict]]]:
    content, calls = run("minimax_m3", text, step, tools)
    return content, [(c["name"], json.loads(c["arguments"])) for c in calls]


@pytest.mark.parametrize("step", [None, 1])
def test_minimax_m3_scalars_follow_the_schema(step):
    text = "Let me plan. " + m3_block(
        m3_invoke('name="plan"', m3_tag("city", "Paris, France&amp; &lt;more&gt; &quot;x&quot; &#x27;y&#39; "),
                  m3_tag("days", " 3\n"), m3_tag("ok", "TRUE"), m3_tag("ratio", "2.5"), m3_tag("unit", "2"),
                  m3_tag("note", " Null "), m3_tag("tags", "a"), m3_tag("tags", "b"), m3_tag("tags", "c")),
        m3_invoke('name="plan"', m3_tag("days", "soon"), m3_tag("ok", "0"), m3_tag("ratio", "-4"),
                  m3_tag("city", "&amp;lt;"), m3_tag("extra", "42"))) + "Done."
    assert m3_run(text, step) == ("Let me plan. Done.", [
        ("plan", {"city": "Paris, France& <more> \"x\" 'y' ", "days": 3, "ok": True, "ratio": 2.5, "unit": "2",
                  "note": None, "tags": ["a", "b", "c"]}),
        # not an integer: stays text; 0 is false; an integer is a number; a parameter the schema lacks is text
        ("plan", {"days": "soon", "ok": False, "ratio": -4, "city": "&lt;", "extra": "42"})])


@pytest.mark.parametrize("step", [None, 1])
def test_minimax_m3_nested_objects_and_item_arrays(step):
    text = m3_block(m3_invoke(
        'name="plan"',
        m3_tag("opts", m3_tag("n", "7") + m3_tag("deep", '{"a": [1]}') + " loose " + m3_tag("n", "8")),
        m3_tag("ids", m3_tag("item", "1") + m3_tag("item", "2") + m3_tag("item", "null")),
        m3_tag("stops", "\n" + m3_tag("item", m3_tag("at", "1") + m3_tag("name", "A")) + "\n"
               + m3_tag("item", m3_tag("at", "2")) + "\n"),
        m3_tag("flags", m3_tag("fast", "true") + m3_tag("cheap", "no")),
        m3_tag("untyped", m3_tag("item", "1"))))
    assert m3_run(text, step)[1] == [("plan", {
        "opts": {"n": [7, 8], "deep": {"a": [1]}, "$text": "loose"}, "ids": [1, 2, None],
        "stops": [{"at": 1, "name": "A"}, {"at": 2}], "flags": {"fast": True, "cheap": "no"},
        "untyped": {"item": "1"}})]  # `<item>`s make an array only where the schema says array


@pytest.mark.parametrize("step", [None, 1])
def test_minimax_m3_invoke_names_and_tags(step):
    text = m3_block(m3_invoke("name=plan", m3_tag("days", "1")), m3_invoke("name='plan' ", m3_tag("days", "2")),
                    m3_invoke('name=" plan "', f"{NS}<bad tag>x{NS}</bad tag>{NS}<>y{NS}</>" + m3_tag("days", "3")),
                    m3_invoke('name=""', m3_tag("days", "4")), m3_invoke("", m3_tag("days", "5")))
    # An invoke with no name is skipped; a tag name that is empty or has whitespace is not a parameter.
    assert m3_run(text, step) == ("", [("plan", {"days": 1}), ("plan", {"days": 2}), ("plan", {"days": 3})])
    # A second block's calls follow the first's.
    content, calls = run("minimax_m3", text + "\n" + text, step, M3_TOOLS)
    assert content == "" and len({c["id"] for c in calls}) == len(calls) == 6


@pytest.mark.parametrize("step", [None, 1])
def test_minimax_m3_with_no_tools_values_stay_text(step):
    text = m3_block(m3_invoke('name="plan"', m3_tag("days", "3"), m3_tag("ok", "true"), m3_tag("note", "null"),
                              m3_tag("ids", m3_tag("item", "1") + m3_tag("item", "2"))))
    assert m3_run(text, step, tools=None)[1] == [("plan", {"days": "3", "ok": "true", "note": None,
                                                           "ids": {"item": ["1", "2"]}})]


@pytest.mark.parametrize("step", [None, 1])
def test_minimax_m3_cut_off_or_empty_blocks_stay_text(step):
    whole = m3_block(m3_invoke('name="plan"', m3_tag("days", "3")))
    for text in ("Sure. " + whole[:-len(f"{NS}</tool_call>")],  # cut off before the end marker
                 "Sure. " + whole[:-3],  # cut off inside it
                 "Sure. " + whole[:70],  # inside the first invoke
                 f"{NS}<tool_call>print(1){NS}</tool_call> after",  # not invokes
                 m3_block(m3_invoke('name=""', m3_tag("days", "3")))):  # no named invoke
        assert m3_run(text, step) == (text, [])


@pytest.mark.parametrize("text", ["See reference [1]", "See reference [1] and more", "odd ]<] text ]<]",
                                  "almost ]<]minimax[>[<tool_cal"])
def test_minimax_m3_ordinary_text_is_not_held(text):
    assert m3_run(text, 1) == (text, [])
    assert m3_run(text, None) == (text, [])


def test_minimax_m3_streams_text_until_a_possible_marker():
    parser = make_tool_parser("minimax_m3", M3_TOOLS)
    assert parser.feed("See [1] ") == ("See [1] ", [])
    assert parser.feed("then ]<]mini") == ("then ", [])  # could be the start marker: held
    assert parser.feed("skirt ") == ("]<]miniskirt ", [])  # it was not
    block = m3_block(m3_invoke('name="plan"', m3_tag("days", "3")))
    assert parser.feed(block[:-5]) == ("", [])  # the block is converted whole at its end marker
    _, deltas = parser.feed(block[-5:])
    assert [(d.name, d.arguments) for d in deltas] == [("plan", '{"days": 3}')]
    assert parser.finish() == ("", [])


# Inkling's markers (each one special token). Behind its reasoning parser, the tool parser sees tool blocks
# as `TOOL{json}END`; on its own it sees the model's whole output.
INK_MESSAGE, INK_TOOL, INK_END = "<|message_model|>", "<|content_invoke_tool_json|>", "<|end_message|>"
INK_END_SAMPLING = "<|content_model_end_sampling|>"
CASES["inkling"] = (
    f'Checking. {INK_TOOL}{{"name": "get_weather", "args": {{"city": "Paris", "unit": "celsius"}}}}{INK_END}\n'
    f'{INK_TOOL}{{"args": {{}}, "name": "get_time"}}{INK_END}',  # `args` may come first
    "Checking. ", [("get_weather", WEATHER), ("get_time", {})])


@pytest.mark.parametrize("step", [None, 1, 3])
def test_inkling_tool_parser_alone_hides_headers_and_the_end_of_sampling(step):
    text = (f'{INK_MESSAGE}get_weather{INK_TOOL}{{"name": "get_weather", "args": {{"city": "Paris"}}}}{INK_END}\n'
            # no `args`: no arguments; the end of sampling may end a block in place of its end marker
            f'{INK_MESSAGE} get_time {INK_TOOL}{{"name": "get_time"}}{INK_END_SAMPLING}')
    content, calls = run("inkling", text, step)
    assert content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                       ("get_time", {})]
    assert run("inkling", f"Done.{INK_END_SAMPLING}", step) == ("Done.", [])
    # ... nor a message of its own that only ends sampling.
    assert run("inkling", f"{text}\n{INK_MESSAGE}{INK_END_SAMPLING}", step)[0] == ""
    # A message that is not a tool block is left as the model wrote it.
    text = f"{INK_MESSAGE}<|content_text|>Hi{INK_END}"
    assert run("inkling", text, step) == (text, [])


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("text", [
    f"{INK_TOOL}not json{INK_END} after",
    f'{INK_TOOL}{{"city": "Paris"}}{INK_END}',  # no name
    f'{INK_TOOL}{{"name": "get_weather", "args": [1]}}{INK_END}',  # arguments not an object
    f'{INK_TOOL}{{"name": "get_weather", "args": {{"city": "Paris"}}}} trailing{INK_END}',
    f'Sure. {INK_TOOL}{{"name": "get_weather", "args": {{"city": "Pa',  # cut off
    f'{INK_TOOL}{{"name": "get_weather", "args": {{}}}}',  # complete JSON, but cut off before the end marker
    f'{INK_MESSAGE}get_weather{INK_TOOL}{{"name": "get_weather", "args": {{',
])
def test_inkling_blocks_that_are_not_calls_stay_text(text, step):
    assert run("inkling", text, step) == (text, [])


def test_inkling_streams_text_until_a_possible_marker():
    parser = make_tool_parser("inkling", TOOLS)
    assert parser.feed("See [1] ") == ("See [1] ", [])
    assert parser.feed("then <|content_inv") == ("then ", [])  # could be the start marker: held
    assert parser.feed("isible ") == ("<|content_invisible ", [])  # it was not
    assert parser.feed('<|content_invoke_tool_json|>{"name": "get_weather", "args": {"city": "Paris"}}') == ("", [])
    _, deltas = parser.feed(INK_END)  # the block is converted whole at its end marker
    assert [(d.index, d.name, d.arguments) for d in deltas] == [(0, "get_weather", '{"city": "Paris"}')]
    assert parser.finish() == ("", [])

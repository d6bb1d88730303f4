"""Tool-call parsers, one vector per model family's documented format, fed whole and
one character at a time (every marker split across feeds), plus malformed output."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.parsers import make_tool_parser

WEATHER = {"city": "Paris", "unit": "celsius"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]


def run(name: str, text: str, step: int | None) -> tuple[str, list[dict]]:
    """Feed `text` in pieces of `step` characters (None: whole); returns (content, calls)."""
    parser = make_tool_parser(name, TOOLS)
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
}


@pytest.mark.parametrize("step", [None, 1, 3, 7])
@pytest.mark.parametrize("name", sorted(CASES))
def test_documented_format(name, step):
    text, want_content, want_calls = CASES[name]
    content, calls = run(name, text, step)
    assert content == want_content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == want_calls
    assert all(c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


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


@pytest.mark.parametrize("name,text", [
    ("hermes", "<tool_call>not json at all</tool_call> after"),
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),
    ("llama3_json", '{"not": "a call"}'),
    ("pythonic", "[1, 2, 3] are numbers"),
    ("mistral", "[TOOL_CALLS]!!"),
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

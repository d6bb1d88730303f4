"""A block's end marker written inside a JSON string of a call (code that prints `</tool_call>`) is that
string's text, not the block's end: the call comes whole, fed whole, one character at a time or as a
tokenizer cuts it, in every format whose calls are JSON between markers."""

from __future__ import annotations

import json

import pytest

from tests.frontend.test_parsers_chunking import feed

CODE = {"code": "print('</tool_call>')  # </TOOLCALL> </tool_calls> <｜tool▁calls▁end｜> \\\" done"}
ARGS = json.dumps(CODE, ensure_ascii=False)

CASES = {
    "hermes": f'<tool_call>\n{{"name": "run_code", "arguments": {ARGS}}}\n</tool_call>',
    "nemotron_deci": f'<TOOLCALL>[{{"name": "run_code", "arguments": {ARGS}}}]</TOOLCALL>',
    "default": f'<TOOLCALL>[{{"name": "run_code", "arguments": {ARGS}}}]</TOOLCALL>',
    "jamba": f'<tool_calls>[{{"name": "run_code", "arguments": {ARGS}}}]</tool_calls>',
    "deepseek_v3_1": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>run_code<｜tool▁sep｜>"
                      f"{ARGS}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    "deepseek_v3": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>run_code\n```json\n"
                    f"{ARGS}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
}


@pytest.mark.parametrize("how", ["whole", "chars", "tokens"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_an_end_marker_inside_a_json_string_does_not_end_the_call(name, how):
    content, calls = feed(name, "Running it.\n" + CASES[name] + "\nDone.", how)
    assert [(n, json.loads(a)) for n, a in calls] == [("run_code", CODE)]
    assert content == "Running it.\n\nDone."


@pytest.mark.parametrize("how", ["whole", "chars", "tokens"])
def test_only_a_calls_json_strings_hide_the_marker(how):
    """An escaped quote does not close the string, and the marker right after the real close ends the call;
    a block that is no JSON call still ends at its marker and is released as the model wrote it."""
    text = '<tool_call>{"name": "run_code", "arguments": {"code": "a\\"</tool_call>"}}</tool_call>tail'
    content, calls = feed("hermes", text, how)
    assert calls == [("run_code", '{"code": "a\\"</tool_call>"}')] and content == "tail"
    text = "<tool_call>not a \"call</tool_call> after"
    assert feed("hermes", text, how) == (text, [])

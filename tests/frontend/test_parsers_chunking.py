"""Every tool-call parser gives the same answer however the model's output is cut into pieces: whole, one
character at a time, or as a tokenizer cuts it (runs of whitespace such as `\\n\\n` or an indentation are
tokens of their own). Whitespace right after a call is layout only while another call or the end follows;
with text after it, it is that text's (a blank line, code's indentation)."""

from __future__ import annotations

import re

import pytest

from dynamo.frontend.parsers import make_tool_parser
from tests.frontend.test_parsers_tools import CASES, TOOLS

# Text after the calls, as a model writes it: blank lines, indented code, a tab.
AFTER = "\n\nFirst line.\n\nSecond line.\n    indented()\n\tDone"
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def pieces(text: str, how: str) -> list[str]:
    if how == "whole":
        return [text]
    if how == "chars":
        return list(text)
    return _TOKEN.findall(text)  # "tokens": words, punctuation and whitespace runs apart


def feed(name: str, text: str, how: str) -> tuple[str, list[tuple[str, str]]]:
    """(content, [(name, arguments)]) of `text` fed in `how`'s pieces."""
    parser = make_tool_parser(name, TOOLS)
    content, calls = [], {}
    for c, deltas in [parser.feed(p) for p in pieces(text, how)] + [parser.finish()]:
        content.append(c)
        for d in deltas:
            call = calls.setdefault(d.index, [d.name, ""])
            call[1] += d.arguments
    return "".join(content), [tuple(calls[i]) for i in sorted(calls)]


@pytest.mark.parametrize("how", ["chars", "tokens"])
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("after", [AFTER, "\n\n", " \n", "\n\nNow again:\n\n{calls}\n"])
def test_the_answer_does_not_depend_on_how_the_output_was_split(name, how, after):
    calls_text = CASES[name][0]
    text = calls_text + after.replace("{calls}", calls_text)
    assert feed(name, text, how) == feed(name, text, "whole")


@pytest.mark.parametrize("how", ["whole", "chars", "tokens"])
def test_text_after_a_call_keeps_its_line_breaks_and_indentation(how):
    """The audit's case: hermes, text after the call fed token by token lost every whitespace token."""
    call = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    content, calls = feed("hermes", call + AFTER, how)
    assert content == AFTER and [n for n, _ in calls] == ["get_time"]
    # Between calls and after the last one, whitespace is layout: dropped however it was split.
    content, calls = feed("hermes", f"Checking.\n{call}\n\n{call}\n", how)
    assert content == "Checking.\n" and len(calls) == 2
    # Text between two calls keeps its own whitespace, the gap before the next call aside.
    content, _ = feed("hermes", f"{call}\n\nNow the weather:\n\n{call}", how)
    assert content == "\n\nNow the weather:\n\n"


@pytest.mark.parametrize("how", ["whole", "chars", "tokens"])
def test_harmony_text_after_a_call_keeps_its_whitespace(how):
    call = ("<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}"
            "<|call|>")
    final = "<|start|>assistant<|channel|>final<|message|>Line one.\n\n    code()\n<|return|>"
    content, calls = feed("harmony", call + final, how)
    assert content == "Line one.\n\n    code()\n" and [n for n, _ in calls] == ["get_time"]

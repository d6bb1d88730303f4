"""Reasoning parsers fed whole and one character at a time (tags split across feeds)."""

from __future__ import annotations

import pytest

from dynamo.frontend.parsers import make_reasoning_parser, make_tool_parser


def run(name: str, text: str, step: int | None) -> tuple[str, str]:
    parser = make_reasoning_parser(name)
    pieces = [text] if step is None else [text[i:i + step] for i in range(0, len(text), step)]
    reasoning, content = [], []
    for piece in [*pieces, None]:
        r, c = parser.feed(piece) if piece is not None else parser.finish()
        reasoning.append(r)
        content.append(c)
    return "".join(reasoning), "".join(content)


@pytest.mark.parametrize("step", [None, 1, 2, 5])
@pytest.mark.parametrize("name,text,want", [
    ("qwen3", "<think>\nLet me think.\n</think>\n\nParis.", ("\nLet me think.\n", "Paris.")),
    ("basic", "No reasoning here.", ("", "No reasoning here.")),
    ("deepseek_r1", "The user asks.</think>\n\nParis.", ("The user asks.", "Paris.")),
    ("deepseek_r1", "<think>The user asks.</think>Paris.", ("The user asks.", "Paris.")),
    ("deepseek_r1", "Still thinking when cut off", ("Still thinking when cut off", "")),
    ("qwen3", "<think>cut off mid-tho", ("cut off mid-tho", "")),
    ("gpt_oss", "<|channel|>analysis<|message|>User wants weather.<|end|><|start|>assistant<|channel|>final"
                "<|message|>It is sunny.<|return|>", ("User wants weather.", "It is sunny.")),
])
def test_vectors(name, text, want, step):
    assert run(name, text, step) == want


@pytest.mark.parametrize("step", [None, 1, 4])
def test_gpt_oss_reasoning_then_harmony_tool_call(step):
    text = ("<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>')
    reasoning, content = run("gpt_oss", text, step)
    assert reasoning == "Need weather."
    tools = make_tool_parser("harmony")
    plain, deltas = tools.feed(content)
    tail, more = tools.finish()
    deltas += more
    assert plain + tail == ""
    assert deltas[0].name == "get_weather"
    assert "".join(d.arguments for d in deltas) == '{"city": "Paris"}'

"""Reasoning parsers fed whole and one character at a time (tags split across feeds)."""

from __future__ import annotations

import pytest

from dynamo.frontend.parsers import make_reasoning_parser, make_tool_parser
from dynamo.frontend.parsers.base import PromptReasoning


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


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize("name,text,want", [
    ("glm45", "<think>Weather.</think>\nSunny.", ("Weather.", "Sunny.")),
    ("kimi_k2", "<think>Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    ("deepseek_v3_1", "No thinking here.", ("", "No thinking here.")),
    ("kimi", "◁think▷Weather.◁/think▷Sunny.", ("Weather.", "Sunny.")),
    ("kimi", "<think>not kimi's tags</think>", ("", "<think>not kimi's tags</think>")),
    ("granite", "Here is my thought process:\nWeather.\nHere is my response:\nSunny.", ("\nWeather.\n", "Sunny.")),
    ("mistral", "[THINK]Weather.[/THINK]Sunny.", ("Weather.", "Sunny.")),
    ("mistral", "Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    ("nemotron_v3", "Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    ("minimax_append_think", "Weather.</think>\n\nSunny.", ("", "<think>Weather.</think>\n\nSunny.")),
])
def test_more_families(name, text, want, step):
    assert run(name, text, step) == want


def run_after(name: str, tail: str, text: str, step: int | None) -> tuple[str, str]:
    parser = make_reasoning_parser(name)
    parser.prompt_ended(parser.judge_prompt(tail))
    pieces = [text] if step is None else [text[i:i + step] for i in range(0, len(text), step)]
    out = [parser.feed(p) for p in pieces] + [parser.finish()]
    return "".join(r for r, _ in out), "".join(c for _, c in out)


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("name,tail,text,want", [
    # The template opened the reasoning: a non-forced parser starts inside it.
    ("glm45", "<|assistant|>\n<think>\n", "Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    ("deepseek_v3_1", "<｜Assistant｜><think>", "Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    # ... and an opening tag the model repeats is dropped.
    ("qwen3", "assistant\n<think>\n", "<think>Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    # The template closed it (thinking off): even a forced parser passes everything through.
    ("deepseek_r1", "assistant\n<think>\n\n</think>\n\n", "Sunny.", ("", "Sunny.")),
    ("qwen3", "assistant\n<think>\n\n</think>\n\n", "Sunny <think>", ("", "Sunny <think>")),
    # Neither: the parser's own default.
    ("deepseek_r1", "<|im_start|>assistant\n", "Weather.</think>Sunny.", ("Weather.", "Sunny.")),
    ("glm45", "<|im_start|>assistant\n", "Sunny.", ("", "Sunny.")),
    ("minimax_append_think", "assistant\n", "Sunny.", ("", "Sunny.")),
])
def test_where_the_prompt_left_the_reasoning(name, tail, text, want, step):
    assert run_after(name, tail, text, step) == want


@pytest.mark.parametrize("name,tail,want", [
    ("qwen3", "assistant\n<think>\n\n", PromptReasoning.OPENED),
    ("mistral", "[/INST][THINK]", PromptReasoning.OPENED),
    ("deepseek_r1", "assistant\n<think>\n\n</think>\n\n", PromptReasoning.CLOSED),
    # A tag with text after it is an earlier turn's, or the model's own start: it says nothing.
    ("qwen3", "<think>\nAn earlier thought.</think>Paris.<|im_end|>\n<|im_start|>assistant\n", PromptReasoning.UNKNOWN),
    ("qwen3", "assistant\n<think>\nOK", PromptReasoning.UNKNOWN),
    # Harmony opens its own channels; an append-think model only tells opened from not.
    ("gpt_oss", "<|end|><|start|>assistant", PromptReasoning.UNKNOWN),
    ("minimax_append_think", "assistant\n", PromptReasoning.CLOSED),
])
def test_the_prompts_end_is_judged_by_its_last_tag(name, tail, want):
    assert make_reasoning_parser(name).judge_prompt(tail) is want


@pytest.mark.parametrize("name,want", [("minimax_append_think", ("", "<think>Weather.</think>Sunny.")),
                                       ("deepseek_r1", ("Weather.", "Sunny.")), ("qwen3", ("", "Weather.</think>Sunny."))])
def test_an_unknown_prompt_end_leaves_the_parsers_default(name, want):
    parser = make_reasoning_parser(name)
    parser.prompt_ended(PromptReasoning.UNKNOWN)
    assert parser.feed("Weather.</think>Sunny.") == want


@pytest.mark.parametrize("name,shown", [("qwen3", False), ("glm45", True), ("deepseek_v4", True), ("mistral", True),
                                         ("deepseek_r1", False), ("gpt_oss", True)])
def test_parsers_whose_tags_are_special_tokens_ask_for_them_shown(name, shown):
    assert make_reasoning_parser(name).needs_special_tokens is shown

"""Reasoning parsers fed whole and one character at a time (tags split across feeds)."""

from __future__ import annotations

import json

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
    # Inkling: the template opened a thinking block, or a text block (thinking off).
    ("inkling", "<|message_model|><|content_thinking|>", "Weather.<|end_message|><|message_model|><|content_text|>"
     "Sunny.<|end_message|>", ("Weather.", "Sunny.")),
    ("inkling", "<|message_model|><|content_text|>", "Sunny.<|end_message|>", ("", "Sunny.")),
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
    ("inkling", "<|message_model|><|content_thinking|>", PromptReasoning.OPENED),
    ("inkling", "<|message_model|><|content_text|>", PromptReasoning.CLOSED),
    # The prompt opened a message: its kind is the model's to write.
    ("inkling", "<|end_message|><|message_model|>", PromptReasoning.UNKNOWN),
    ("inkling", "<|content_thinking|>An earlier thought.<|end_message|>", PromptReasoning.UNKNOWN),
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
                                         ("deepseek_r1", False), ("gpt_oss", True),
                                         ("inkling", True)])
def test_parsers_whose_tags_are_special_tokens_ask_for_them_shown(name, shown):
    assert make_reasoning_parser(name).needs_special_tokens is shown


# Inkling's markers (each one special token).
MESSAGE, THINKING, TEXT = "<|message_model|>", "<|content_thinking|>", "<|content_text|>"
TOOL, END, END_SAMPLING = "<|content_invoke_tool_json|>", "<|end_message|>", "<|content_model_end_sampling|>"
WEATHER_CALL = '{"name": "get_weather", "args": {"city": "SF"}}'


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize("text,want", [
    (f"{MESSAGE}{THINKING}Need weather.{END}\n{MESSAGE}{TEXT}It is sunny.{END}\n{END_SAMPLING}",
     ("Need weather.", "It is sunny.")),
    # The prompt usually ends with the message marker: the output starts at the content kind.
    (f"{THINKING}Need weather.{END}{MESSAGE}{TEXT}It is sunny.{END}", ("Need weather.", "It is sunny.")),
    (f"{MESSAGE}{TEXT}Just an answer.{END}", ("", "Just an answer.")),
    (f"{TEXT}Sunny.{END_SAMPLING}", ("", "Sunny.")),  # the end of sampling in place of the end marker
    (f"{TEXT}Sunny.{END}\n{MESSAGE}{END_SAMPLING}", ("", "Sunny.")),  # ... or in a message of its own
    ("Paris is sunny today.", ("", "Paris is sunny today.")),  # no markers at all: the answer
    ("Paris", ("", "Paris")),
    (f"{THINKING}One.{END}\n{MESSAGE}{THINKING} Two.{END}{MESSAGE}{TEXT}A{END}{MESSAGE}{TEXT}B{END}",
     ("One. Two.", "AB")),
    # A tool block passes through for the tool parser, its header (the tool's name) dropped.
    (f"{THINKING}Need weather.{END}{MESSAGE}get_weather{TOOL}{WEATHER_CALL}{END}{END_SAMPLING}",
     ("Need weather.", f"{TOOL}{WEATHER_CALL}{END}")),
    (f"get_weather{TOOL}{WEATHER_CALL}{END}", ("", f"{TOOL}{WEATHER_CALL}{END}")),
    # Cut off: a thinking block's text is reasoning, a text block's the answer; a tool block goes on unclosed.
    (f"{THINKING}Still thinking when cut", ("Still thinking when cut", "")),
    (f"{THINKING}Done.{END}{MESSAGE}{TEXT}Half an ans", ("Done.", "Half an ans")),
    (f"{MESSAGE}get_weather{TOOL}{WEATHER_CALL[:20]}", ("", f"{TOOL}{WEATHER_CALL[:20]}")),
])
def test_inkling_blocks(text, want, step):
    assert run("inkling", text, step) == want


def test_inkling_streams_ordinary_text_and_holds_only_markers():
    parser = make_reasoning_parser("inkling")
    assert parser.feed("Paris") == ("", "")  # one word at the start may be a tool block's header
    assert parser.feed(" is") == ("", "Paris is")  # two are not
    assert parser.feed(" sunny <|end_mes") == ("", " sunny")  # whitespace before a marker is layout: held
    assert parser.feed("sage|>") == ("", "")
    assert parser.feed(f"{MESSAGE}{THINKING}Hm") == ("Hm", "")
    assert parser.feed("m<|en") == ("m", "")
    assert parser.finish() == ("<|en", "")


def test_inkling_budget_closes_the_thinking_block_and_opens_the_answer():
    parser = make_reasoning_parser("inkling")
    tags = parser.budget_tags
    assert (tags.start, tags.end, tags.starts_inside) == (THINKING, END, False)
    assert tags.close.startswith(tags.end)
    assert run("inkling", f"{THINKING}A long thought" + tags.close + "Answer.", 1) == ("A long thought", "Answer.")


def run_inkling_with_tools(text: str, step: int | None) -> tuple[str, str, list[tuple[str, dict]]]:
    """Both inkling parsers chained, as the output stage chains them: (reasoning, content, calls)."""
    reasoning, content = run("inkling", text, step)
    tools = make_tool_parser("inkling")
    pieces = [content] if step is None else [content[i:i + step] for i in range(0, len(content), step)]
    outs = [tools.feed(p) for p in pieces] + [tools.finish()]
    calls: dict[int, list] = {}
    for d in (d for _, deltas in outs for d in deltas):
        call = calls.setdefault(d.index, [d.name, ""])
        call[1] += d.arguments
    return reasoning, "".join(c for c, _ in outs), [(n, json.loads(a)) for n, a in (calls[i] for i in sorted(calls))]


@pytest.mark.parametrize("step", [None, 1])
def test_inkling_reasoning_then_inkling_tool_calls(step):
    text = (f"{MESSAGE}{THINKING}Need weather.{END}\n{MESSAGE}{TEXT}Checking.{END}\n"
            f"{MESSAGE}get_weather{TOOL}{WEATHER_CALL}{END}\n{END_SAMPLING}")
    assert run_inkling_with_tools(text, step) == ("Need weather.", "Checking.", [("get_weather", {"city": "SF"})])
    text = (f"{THINKING}Two.{END}{MESSAGE}get_weather{TOOL}{WEATHER_CALL}{END}\n"
            f'{MESSAGE}get_time{TOOL}{{"args": {{"tz": "PST"}}, "name": "get_time"}}{END}{END_SAMPLING}')
    assert run_inkling_with_tools(text, step) == ("Two.", "", [("get_weather", {"city": "SF"}),
                                                               ("get_time", {"tz": "PST"})])
    # Not a call (bad JSON), or cut off before its end: the answer keeps the block as the model wrote it.
    text = f"{THINKING}Hm.{END}{MESSAGE}get_weather{TOOL}{{not json}}{END}{MESSAGE}{TEXT}Sorry.{END}"
    assert run_inkling_with_tools(text, step) == ("Hm.", f"{TOOL}{{not json}}{END}Sorry.", [])
    text = f"{THINKING}Hm.{END}{MESSAGE}get_weather{TOOL}{WEATHER_CALL[:-1]}"
    assert run_inkling_with_tools(text, step) == ("Hm.", f"{TOOL}{WEATHER_CALL[:-1]}", [])

"""What a chat request's tools ask of the engine's structured output (`guided_decoding`), for engines
that hold their output to it (vLLM's structured outputs):

- tool_choice naming a function: that function's parameters schema (the whole output is its arguments);
- tool_choice required: a JSON list of `{"name", "parameters"}` objects, as vLLM and NVIDIA Dynamo ask
  for it, every tool's `$defs` moved to the schema's root so that its `$ref`s still resolve once its
  parameters sit inside the list's schema (`tool_defs.py`), `maxItems: 1` when parallel_tool_calls is false;
- tool_choice auto with a `response_format`: the format constrains only the final answer (OpenAI's rule), so
  the engine gets xgrammar's structural tag (its `format` form) admitting either that answer or the calls in
  the model's own format (`CallLayout`, from its tool-call parser): JSON calls between fixed markers
  (hermes/qwen25/qwen3, llama3_json, nemotron_deci, jamba, phi4, default); calls headed by their name, one tag
  per tool (deepseek_v3, deepseek_v3_1, kimi_k2/k25 with the model's own call count, mistral in both its
  forms); and tagged parameters in xgrammar's XML styles, each still held to its tool's schema
  (qwen3_coder/nemotron_nano `qwen_xml`, glm45/glm47 `glm_xml`, deepseek_v3_2/v4 `deepseek_xml`, minimax_m2
  `minimax_xml`), read back by the parsers as the styles write each value (`tagged_calls.py`). A little layout
  whitespace may open either (DeepSeek V3.2/V4 write `\n\n` before their calls, GLM-4.5 `\n`; the parsers show
  none of it ahead of calls), and a space may part a listed block's marker from its list (Mistral's template
  writes `[TOOL_CALLS] [` for its SentencePiece tokenizers). Left without a layout: pythonic (Python literals)
  and gemma4 (Gemma's own object notation), which no xgrammar format reads; harmony (gpt-oss) and inkling,
  where the answer itself is a message (`<|channel|>final<|message|>` ..., `<|content_text|>`...) beside an
  analysis or thinking message, and a message's end (`<|call|>`, `<|return|>`) is the engine's stop token,
  which vLLM hands xgrammar as a stop token rather than text: a shape "answer or calls" does not have, and one
  not checked here without those models' tokenizers; minimax_m3, whose `minimax_m3_xml` style (xgrammar 0.2.8)
  refuses a parameters schema that allows additional properties, so the engine would refuse such a request
  rather than leave it unconstrained. A model that reasons first (a reasoning parser on its card) gets room
  for its reasoning in front, free text up to the parser's end tag (`thinking`), opened by its start tag or
  already open where the prompt opened it (the parser's own reading of the prompt's end, `ReasoningStart`),
  none where the prompt closed it (thinking switched off). Optional, so an engine that keeps the reasoning out
  of the grammar itself (vLLM or SGLang given their own reasoning parser) can apply it from the answer on. A
  tool-call format or reasoning parser no grammar here can say (`tool_call_layout` None; reasoning not between
  fixed tags) gets no constraint at all: calls stay possible, the answer is not held to the schema, and the
  log says so once per name.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from dynamo.frontend.parsers import CallLayout, make_reasoning_parser, tool_call_layout
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.tool_defs import hoist_defs

log = logging.getLogger(__name__)

ANY_OBJECT: dict[str, Any] = {"type": "object"}
_warned: set[str] = set()
# What may precede the answer or the calls, after the reasoning's end where there is one (Qwen3 writes
# `</think>\n\n`, DeepSeek V3.2 `\n\n` before its calls): a few characters, so that a model held to the
# grammar cannot spend its tokens on whitespace alone.
_LAYOUT: dict[str, Any] = {"type": "regex", "pattern": "[ \\t\\r\\n]{0,8}"}
# What may part a listed block's marker from its list (Mistral's `[TOOL_CALLS] [`).
_SPACE: dict[str, Any] = {"type": "regex", "pattern": " ?"}


class ReasoningStart(NamedTuple):
    """The model's reasoning parser (the card's) and where the request's prompt leaves its reasoning."""

    parser: str
    prompt: PromptReasoning = PromptReasoning.UNKNOWN


def parameters_schema(function: dict) -> dict:
    """A function's parameters schema; none (or empty) still means a JSON object, as vLLM has it."""
    return function.get("parameters") or {"type": "object", "properties": {}}


def named_schema(function: dict) -> dict:
    """tool_choice naming `function`: its arguments are the whole output (its `$defs` stay at the root)."""
    return parameters_schema(function)


def required_schema(functions: list[dict], parallel: bool) -> dict:
    """tool_choice required: a list of one or more calls, `[{"name": .., "parameters": {..}}, ..]`."""
    params, defs = hoist_defs([(f["name"], parameters_schema(f)) for f in functions])
    items = [{"type": "object", "properties": {"name": {"type": "string", "enum": [f["name"]]}, "parameters": p},
              "required": ["name", "parameters"]} for f, p in zip(functions, params)]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": items}}
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def answer_or_calls(functions: list[dict], answer: dict, tool_format: str | None, parallel: bool,
                    reasoning: ReasoningStart | None = None) -> dict | None:
    """tool_choice auto with a response_format: a structural tag admitting the answer in `answer` (a JSON
    schema) or one or more calls as `tool_format`'s parser reads them (None: the output stage's fallback,
    Dynamo's `default`), after the model's reasoning where it reasons first (`reasoning`). None where the
    format or the reasoning cannot be said as a grammar (logged once per name)."""
    name = tool_format or "default"
    layout = tool_call_layout(name)
    if layout is None:
        return _unsaid(f"tool-call format {name!r}")
    body = {"type": "or", "elements": [{"type": "json_schema", "json_schema": answer},
                                       _calls_format(functions, layout, parallel)]}
    before: list[dict] = []
    if reasoning is not None:
        try:
            section = thinking(reasoning)
        except ValueError:
            return _unsaid(f"reasoning parser {reasoning.parser!r}")
        before += [section] if section is not None else []
    return {"type": "structural_tag", "format": {"type": "sequence", "elements": [*before, _LAYOUT, body]}}


def thinking(reasoning: ReasoningStart) -> dict | None:
    """Optional reasoning in front of the answer, as the parser reads it: free text up to one of its end
    tags, opened by one of its start tags, or already open where the prompt opened it (or the parser's
    model always starts inside); None where the prompt closed it. ValueError where the parser's reasoning
    is not text between fixed tags (Harmony's channels, MiniMax's kept reasoning)."""
    parser = make_reasoning_parser(reasoning.parser)
    starts, ends = getattr(parser, "starts", None), getattr(parser, "ends", None)
    if not starts or not ends or parser.budget_tags is None:
        raise ValueError(reasoning.parser)
    if reasoning.prompt is PromptReasoning.CLOSED:
        return None
    inside = reasoning.prompt is PromptReasoning.OPENED or (
        reasoning.prompt is PromptReasoning.UNKNOWN and parser.budget_tags.starts_inside)
    # Inside, the text up to the end tag is reasoning even where the model writes an opening tag again.
    tags = [{"type": "tag", "begin": begin, "content": {"type": "any_text"}, "end": list(ends)}
            for begin in ([""] if inside else starts)]
    return {"type": "optional", "content": tags[0] if len(tags) == 1 else {"type": "or", "elements": tags}}


def _unsaid(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("%s cannot be written as a grammar: with tools and a response_format, the engine is held "
                    "to neither (calls stay possible; the answer is not held to the schema)", what)
    return None


def _calls_format(functions: list[dict], layout: CallLayout, parallel: bool) -> dict:
    """One or more calls (one only when `parallel` is false) as `layout` writes them, each a tag per function
    so that its arguments follow that function's own schema (each its own root: its `$defs` resolve as
    written); or as the layout's alternative."""
    calls = _headed_calls(functions, layout, parallel) if layout.head is not None else \
        _json_calls(functions, layout, parallel)
    if layout.alternative is None:
        return calls
    return {"type": "or", "elements": [calls, _calls_format(functions, layout.alternative, parallel)]}


def _json_calls(functions: list[dict], layout: CallLayout, parallel: bool) -> dict:
    """Calls as JSON objects `{"name": .., "<args_key>": ..}`: in one listed block, or a block each."""
    outer = ("", "") if layout.listed else (layout.start, layout.end)
    tags = [{"type": "tag",
             "begin": outer[0] + '{"name": ' + json.dumps(f["name"], ensure_ascii=False)
             + f', "{layout.args_key}": ',
             "content": _arguments(f, layout), "end": "}" + outer[1]} for f in functions]
    calls = _separated(tags, ", " if layout.listed else layout.between, parallel)
    if not layout.listed:
        return calls
    listed = {"type": "tag", "begin": "[", "content": calls, "end": "]" + layout.end}
    if not layout.start:
        return listed
    return {"type": "sequence", "elements": [{"type": "const_string", "value": layout.start}, _SPACE, listed]}


def _headed_calls(functions: list[dict], layout: CallLayout, parallel: bool) -> dict:
    """Calls named by their head (`{name}` in it the function's, `{index}` any number), in one block."""
    tags = []
    for f in functions:
        begin, counted, rest = layout.head.replace("{name}", f["name"]).partition("{index}")
        content = _arguments(f, layout)
        if counted:  # the model's own count of its calls (Kimi's ids), then the rest of the head
            content = {"type": "sequence", "elements": [{"type": "regex", "pattern": "[0-9]+"}]
                       + ([{"type": "const_string", "value": rest}] if rest else []) + [content]}
        tags.append({"type": "tag", "begin": begin, "content": content, "end": layout.tail})
    calls = _separated(tags, layout.between, parallel)
    if not layout.start and not layout.end:
        return calls
    return {"type": "tag", "begin": layout.start, "content": calls, "end": layout.end}


def _arguments(function: dict, layout: CallLayout) -> dict:
    args = {"type": "json_schema", "json_schema": parameters_schema(function)}
    if layout.style != "json":  # one tag per parameter (xgrammar's XML styles), typed by the same schema
        args["style"] = layout.style
    return args


def _separated(tags: list[dict], separator: str, parallel: bool) -> dict:
    return {"type": "tags_with_separator", "tags": tags, "separator": separator, "at_least_one": True,
            "stop_after_first": not parallel}

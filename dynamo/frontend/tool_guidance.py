"""What a chat request's tools ask of the engine's structured output (`guided_decoding`), for engines
that hold their output to it (vLLM's structured outputs):

- tool_choice naming a function: that function's parameters schema (the whole output is its arguments);
- tool_choice required: a JSON list of `{"name", "parameters"}` objects, as vLLM and NVIDIA Dynamo ask
  for it, every tool's `$defs` moved to the schema's root so that its `$ref`s still resolve once its
  parameters sit inside the list's schema (`tool_defs.py`), `maxItems: 1` when parallel_tool_calls is false;
- tool_choice auto with a `response_format`: the format constrains only the final answer (OpenAI's
  rule), so the engine gets xgrammar's structural tag admitting either that answer or the calls in the
  model's own format (`CallLayout`, from its tool-call parser). A format no grammar here can say
  (`tool_call_layout` None) gets no constraint at all: calls stay possible, the answer is not held to
  the schema, and the log says so once per format.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dynamo.frontend.parsers import CallLayout, tool_call_layout
from dynamo.frontend.tool_defs import hoist_defs

log = logging.getLogger(__name__)

ANY_OBJECT: dict[str, Any] = {"type": "object"}
_warned: set[str] = set()


def parameters_schema(function: dict) -> dict:
    """A function's parameters schema; none (or empty) still means a JSON object, as vLLM has it."""
    return function.get("parameters") or {"type": "object", "properties": {}}


def named_schema(function: dict) -> dict:
    """tool_choice naming `function`: its arguments are the whole output (its `$defs` stay at the root)."""
    return parameters_schema(function)


def required_schema(functions: list[dict], parallel: bool) -> dict:
    """tool_choice required: a list of one or more calls, `[{"name": .., "parameters": {..}}, ..]`."""
    located = [(f["name"], parameters_schema(f), f"/items/anyOf/{i}/properties/parameters")
               for i, f in enumerate(functions)]
    params, defs = hoist_defs(located)
    items = [{"type": "object", "properties": {"name": {"type": "string", "enum": [f["name"]]}, "parameters": p},
              "required": ["name", "parameters"]} for f, p in zip(functions, params)]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": items}}
    if not parallel:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


def answer_or_calls(functions: list[dict], answer: dict, tool_format: str | None, parallel: bool) -> dict | None:
    """tool_choice auto with a response_format: a structural tag admitting the answer in `answer` (a JSON
    schema) or one or more calls as `tool_format`'s parser reads them (None: the output stage's fallback,
    Dynamo's `default`). None where that format cannot be said as a grammar (logged once per format)."""
    name = tool_format or "default"
    layout = tool_call_layout(name)
    if layout is None:
        if name not in _warned:
            _warned.add(name)
            log.warning("tool-call format %r cannot be written as a grammar: with tools and a response_format, "
                        "the engine is held to neither (calls stay possible; the answer is not held to the "
                        "schema)", name)
        return None
    calls = _calls_format(functions, layout, parallel)
    return {"type": "structural_tag",
            "format": {"type": "or", "elements": [{"type": "json_schema", "json_schema": answer}, calls]}}


def _calls_format(functions: list[dict], layout: CallLayout, parallel: bool) -> dict:
    """One or more calls (one only when `parallel` is false), each a tag per function so that its
    arguments follow that function's own schema (each its own root: its `$defs` resolve as written)."""
    outer = ("", "") if layout.listed else (layout.start, layout.end)
    tags = [{"type": "tag",
             "begin": outer[0] + '{"name": ' + json.dumps(f["name"], ensure_ascii=False)
             + f', "{layout.args_key}": ',
             "content": {"type": "json_schema", "json_schema": parameters_schema(f)},
             "end": "}" + outer[1]} for f in functions]
    calls = {"type": "tags_with_separator", "tags": tags, "separator": ", " if layout.listed else layout.between,
             "at_least_one": True, "stop_after_first": not parallel}
    if not layout.listed:
        return calls
    return {"type": "tag", "begin": layout.start + "[", "content": calls, "end": "]" + layout.end}

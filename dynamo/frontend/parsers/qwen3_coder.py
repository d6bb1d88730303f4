"""Qwen3-Coder's XML-style tool calls:

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

The name is sent when `<function=..>` is complete; each parameter is sent as a JSON
member when its `</parameter>` arrives, typed by the tool's JSON schema (a parameter
the schema calls a string stays a string; numbers, booleans, objects are decoded).
"""

from __future__ import annotations

import json
import re

from dynamo.frontend.parsers.base import ToolCallDelta, new_call_id, register_tool_parser
from dynamo.frontend.parsers.json_scan import loads_or_none
from dynamo.frontend.parsers.marked import MarkedToolParser

_FUNCTION = re.compile(r"<function=([^>\n]+)>")
_PARAM = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)
_FUNCTION_END = "</function>"
_PARAM_END = "</parameter>"


def _schema_types(tools: list[dict]) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for tool in tools:
        fn = tool.get("function") or {}
        props = ((fn.get("parameters") or {}).get("properties") or {})
        types[fn.get("name", "")] = {k: (v or {}).get("type", "string") if isinstance(v, dict) else "string"
                                     for k, v in props.items()}
    return types


class _Qwen3CoderInner:
    def __init__(self, first_index: int, types: dict[str, dict[str, str]]) -> None:
        self.emitted = 0
        self._first = first_index
        self._types = types
        self._buf = ""
        self._pos = 0
        self._name: str | None = None
        self._params = 0
        self._searched = 0

    def _index(self) -> int:
        return self._first + self.emitted - 1

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        while True:
            if self._name is None:
                m = _FUNCTION.search(self._buf, self._pos)
                if not m:
                    return out
                self._name, self._params, self._pos = m.group(1).strip(), 0, m.end()
                self.emitted += 1
                out.append(ToolCallDelta(self._index(), new_call_id(), self._name, ""))
            # Only text past what was already searched can hold a closing tag (long values stay O(n)).
            from_ = max(self._pos, self._searched - len(_FUNCTION_END))
            end = self._buf.find(_FUNCTION_END, from_)
            limit = end if end != -1 else len(self._buf)
            while True:
                close = self._buf.find(_PARAM_END, max(self._pos, self._searched - len(_PARAM_END)), limit)
                if close == -1:
                    break
                opening = self._buf.find("<parameter=", self._pos, close)
                m = _PARAM.match(self._buf, opening, close + len(_PARAM_END)) if opening != -1 else None
                if m is None:  # stray closing tag: skip it
                    self._pos = close + len(_PARAM_END)
                    continue
                out.append(ToolCallDelta(self._index(), arguments=self._member(m.group(1).strip(), m.group(2))))
                self._pos = m.end()
            self._searched = len(self._buf)
            if end == -1:
                return out
            out.append(ToolCallDelta(self._index(), arguments="}" if self._params else "{}"))
            self._name, self._pos = None, end + len(_FUNCTION_END)

    def _member(self, key: str, raw: str) -> str:
        kind = self._types.get(self._name or "", {}).get(key, "string")
        value: object = raw
        if kind != "string":
            decoded = loads_or_none(raw.strip())
            value = decoded if decoded is not None else raw
        sep = "{" if self._params == 0 else ", "
        self._params += 1
        return sep + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)

    def close(self) -> list[ToolCallDelta]:
        if self._name is not None:  # truncated: close what was sent so arguments stay JSON
            self._name = None
            return [ToolCallDelta(self._index(), arguments="}" if self._params else "{}")]
        return []


@register_tool_parser("qwen3_coder")
class Qwen3CoderParser(MarkedToolParser):
    start_markers = ("<tool_call>",)
    end_marker = "</tool_call>"

    def make_inner(self, marker: str, first_index: int):
        return _Qwen3CoderInner(first_index, _schema_types(self.tools))

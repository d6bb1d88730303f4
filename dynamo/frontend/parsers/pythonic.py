"""Pythonic tool calls (Llama 3.2 / Llama 4): the output is a Python list of calls,

    [get_weather(city="Paris", unit="celsius"), get_time()]

optionally wrapped in `<|python_start|>..<|python_end|>`. Keyword values are Python
literals, so arguments are converted to JSON and cannot stream raw: each call is sent
(name and arguments) as soon as its closing parenthesis arrives.
"""

from __future__ import annotations

import ast
import json

from dynamo.frontend.parsers.base import ToolCallDelta, new_call_id, register_tool_parser
from dynamo.frontend.parsers.marked import MarkedToolParser


class _PythonicInner:
    def __init__(self, first_index: int) -> None:
        self.emitted = 0
        self.failed = False
        self._first = first_index
        self._buf = ""
        self._pos = 0
        self._opened = False
        self._closed = False

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        while not (self.failed or self._closed):
            item = self._next_item()
            if item is None:
                break
            self._emit(item, out)
        return out

    def _next_item(self) -> str | None:
        """The next complete top-level list item, or None if it has not arrived."""
        buf, i = self._buf, self._pos
        if not self._opened:
            i = len(buf) - len(buf[i:].lstrip())
            if i >= len(buf):
                return None
            if buf[i] != "[":
                self.failed = True
                return None
            self._opened, i = True, i + 1
            self._pos = i
        depth, quote, j = 0, "", i
        while j < len(buf):
            c = buf[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0:  # the list's own `]`
                    self._closed = True
                    self._pos = j + 1
                    return buf[i:j] if buf[i:j].strip() else None
                depth -= 1
            elif c == "," and depth == 0:
                self._pos = j + 1
                return buf[i:j]
            j += 1
        return None

    def _emit(self, item: str, out: list[ToolCallDelta]) -> None:
        call = _parse_call(item)
        if call is None:
            self.failed = True
            return
        name, args = call
        self.emitted += 1
        out.append(ToolCallDelta(self._first + self.emitted - 1, new_call_id(), name,
                                 json.dumps(args, ensure_ascii=False)))

    def close(self) -> list[ToolCallDelta]:
        if not self._closed and not self.emitted:
            self.failed = True
        return []


def _parse_call(item: str) -> tuple[str, dict] | None:
    try:
        node = ast.parse(item.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)) or node.args:
        return None
    name = ast.unparse(node.func)
    try:
        args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except ValueError:
        return None
    return name, args


@register_tool_parser("pythonic")
class PythonicParser(MarkedToolParser):
    start_markers = ("<|python_start|>",)
    bare_starts = ("[",)
    needs_special_tokens = True

    def __init__(self, tools=None) -> None:
        super().__init__(tools)
        self.end_marker = None

    def make_inner(self, marker: str, first_index: int):
        self.end_marker = "<|python_end|>" if marker else None
        return _PythonicInner(first_index)

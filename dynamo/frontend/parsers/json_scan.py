"""Incremental JSON scanning for streamed tool calls: where a JSON value that is still
arriving ends (if it has ended), and an argument cursor that releases a value's raw
text as it arrives so arguments stream instead of waiting for the closing brace."""

from __future__ import annotations

import json
from typing import Any

_WS = " \t\r\n"


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def value_end(text: str, start: int) -> int | None:
    """Index just past the JSON value starting at `start` (after whitespace), or None
    if the value has not finished arriving. Does not validate, only delimits."""
    i = skip_ws(text, start)
    if i >= len(text):
        return None
    c = text[i]
    if c == '"':
        return _string_end(text, i)
    if c in "{[":
        depth, j, n = 0, i, len(text)
        while j < n:
            c = text[j]
            if c == '"':
                end = _string_end(text, j)
                if end is None:
                    return None
                j = end
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return None
    j = i
    while j < len(text) and text[j] not in ",}]" + _WS:
        j += 1
    return j if j < len(text) else None  # a scalar is complete only once a delimiter follows


def _string_end(text: str, i: int) -> int | None:
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        j += 1
    return None


def strict_loads(text: str) -> Any:
    """`json.loads` that also refuses NaN and Infinity (ValueError): arguments handed on to a client must
    stay valid JSON, which has neither."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class ValueScanner:
    """`value_end` for a buffer that only grows: each character is scanned once, so a
    long streamed value costs O(length), not O(length^2)."""

    __slots__ = ("start", "end", "_i", "_depth", "_in_str", "_esc", "_kind")

    def __init__(self, start: int) -> None:
        self.start = start  # first character of the value (after whitespace) once known
        self.end: int | None = None
        self._i = start
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._kind = ""

    @property
    def in_string(self) -> bool:
        """The text scanned so far ends inside one of the value's JSON strings (a marker there is its text)."""
        return self._in_str and self.end is None

    def scan(self, text: str) -> int | None:
        if self.end is not None:
            return self.end
        if not self._kind:
            i = skip_ws(text, self._i)
            if i >= len(text):
                self._i = i
                return None
            self.start, self._i = i, i
            c = text[i]
            self._kind = "container" if c in "{[" else "string" if c == '"' else "scalar"
        if self._kind == "scalar":
            self.end = value_end(text, self.start)
            return self.end
        i, n = self._i, len(text)
        depth, in_str, esc = self._depth, self._in_str, self._esc
        string_only = self._kind == "string"
        while i < n:
            c = text[i]
            i += 1
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
                    if string_only:
                        self.end = i
                        break
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    self.end = i
                    break
        self._i, self._depth, self._in_str, self._esc = i, depth, in_str, esc
        return self.end


class ArgsCursor:
    """Streams the raw text of one JSON arguments value that starts at `start` in a
    growing buffer. Objects and arrays stream as they arrive; a value sent as a JSON
    string (some models double-encode) is released decoded, once complete."""

    __slots__ = ("sent", "done", "_scan")

    def __init__(self, start: int) -> None:
        self.sent = 0
        self.done = False
        self._scan = ValueScanner(start)

    @property
    def start(self) -> int:
        return self._scan.start

    def advance(self, buf: str) -> str:
        """New argument text available in `buf` (which only grows)."""
        if self.done:
            return ""
        end = self._scan.scan(buf)
        begin = self._scan.start
        if begin >= len(buf) or buf[begin] in " \t\r\n":
            return ""
        if buf[begin] not in "{[":
            if end is None:
                return ""
            self.done = True
            raw = buf[begin:end]
            value = loads_or_none(raw)
            return value if isinstance(value, str) else raw
        stop = end if end is not None else len(buf)
        out = buf[begin + self.sent:stop]
        self.sent = stop - begin
        self.done = end is not None
        return out

    def end(self, buf: str) -> int | None:
        return self._scan.scan(buf)

    @property
    def in_string(self) -> bool:
        return not self.done and self._scan.in_string

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


def loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class ArgsCursor:
    """Streams the raw text of one JSON arguments value that starts at `start` in a
    growing buffer. Objects and arrays stream as they arrive; a value sent as a JSON
    string (some models double-encode) is released decoded, once complete."""

    __slots__ = ("start", "sent", "done")

    def __init__(self, start: int) -> None:
        self.start = start
        self.sent = 0
        self.done = False

    def advance(self, buf: str) -> str:
        """New argument text available in `buf` (which only grows)."""
        if self.done:
            return ""
        begin = skip_ws(buf, self.start)
        if begin >= len(buf):
            return ""
        self.start = begin
        end = value_end(buf, begin)
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
        return value_end(buf, self.start)

"""Gemma 4's tool calls (`gemma4`): one call per block, arguments in Gemma's own object notation,
not JSON (bare keys, strings between `<|"|>` delimiters, numbers, true/false, null/none/nil,
nested objects and arrays):

    <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>

A block is converted whole when its end marker arrives (the notation cannot be re-emitted as JSON
piece by piece without parsing it); a block that is not a call in this notation, or is cut off
before its end, stays in the answer as the model wrote it.
"""

from __future__ import annotations

import json
import re

from dynamo.frontend.parsers.base import ToolCallDelta, new_call_id, register_tool_parser
from dynamo.frontend.parsers.marked import Inner, MarkedToolParser

QUOTE = '<|"|>'
_CALL = re.compile(r"\s*call:([\w\-.]+)\{(.*)\}\s*$", re.DOTALL)
_KEY = re.compile(r"\s*([\w\-.]+)\s*:\s*")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_WORDS = {"true": True, "false": False, "null": None, "none": None, "nil": None}


class NotGemma(ValueError):
    pass


def parse_object(text: str, at: int) -> tuple[dict, int]:
    """`key:value,...` from `at` up to a `}` or the end of `text`: (the object, where it stopped)."""
    out: dict = {}
    at = _skip(text, at)
    while at < len(text) and text[at] != "}":
        key = _KEY.match(text, at)
        if key is None:
            raise NotGemma(f"expected a key at {at}")
        at = key.end()
        if at >= len(text) or text[at] in ",}":
            out[key.group(1)] = ""  # `key:` with nothing: an empty string, as Gemma's own parser reads it
        else:
            out[key.group(1)], at = parse_value(text, at)
        at = _skip(text, at)
        if at < len(text) and text[at] == ",":
            at = _skip(text, at + 1)
    return out, at


def parse_value(text: str, at: int):
    if text.startswith(QUOTE, at):
        end = text.find(QUOTE, at + len(QUOTE))
        if end == -1:
            raise NotGemma("unterminated string")
        return text[at + len(QUOTE):end], end + len(QUOTE)
    if text.startswith("{", at):
        value, at = parse_object(text, at + 1)
        return value, _close(text, at, "}")
    if text.startswith("[", at):
        return _parse_array(text, at + 1)
    word = re.match(r"[A-Za-z]+", text[at:])
    if word and word.group(0).lower() in _WORDS:
        return _WORDS[word.group(0).lower()], at + word.end()
    number = _NUMBER.match(text, at)
    if number is None:
        raise NotGemma(f"expected a value at {at}")
    return (float if number.group(1) else int)(number.group(0)), number.end()


def _parse_array(text: str, at: int) -> tuple[list, int]:
    items: list = []
    at = _skip(text, at)
    while at < len(text) and text[at] != "]":
        value, at = parse_value(text, at)
        items.append(value)
        at = _skip(text, at)
        if at < len(text) and text[at] == ",":
            at = _skip(text, at + 1)
    return items, _close(text, at, "]")


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _close(text: str, at: int, bracket: str) -> int:
    if at >= len(text) or text[at] != bracket:
        raise NotGemma(f"expected {bracket!r} at {at}")
    return at + 1


def parse_call(block: str) -> tuple[str, dict] | None:
    """(name, arguments) of one block's text between the markers; None when it is not a call."""
    match = _CALL.match(block)
    if match is None:
        return None
    try:
        arguments, end = parse_object(match.group(2), 0)
    except (NotGemma, ValueError):
        return None
    return (match.group(1), arguments) if end == len(match.group(2)) else None


class _Gemma4Call:
    """One block, held until its end marker and then sent as one call (or none)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.emitted = 0
        self.failed = False
        self._text = ""

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._text += text
        head = self._text.lstrip()
        self.failed = not ("call:".startswith(head) or head.startswith("call:"))
        return []

    def close(self) -> list[ToolCallDelta]:
        call = parse_call(self._text)
        if call is None:
            return []
        self.emitted = 1
        return [ToolCallDelta(self.index, new_call_id(), call[0], json.dumps(call[1], ensure_ascii=False))]


@register_tool_parser("gemma4")
class Gemma4Parser(MarkedToolParser):
    start_markers = ("<|tool_call>",)
    end_marker = "<tool_call|>"
    needs_special_tokens = True

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return _Gemma4Call(first_index)

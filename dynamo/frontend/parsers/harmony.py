"""OpenAI Harmony (gpt-oss) output: a sequence of messages

    <|channel|>analysis<|message|>thinking...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>
    <|start|>assistant<|channel|>final<|message|>answer<|return|>

`HarmonyStream` splits it incrementally into message events; the `gpt_oss` reasoning
parser routes the analysis channel to reasoning, and the `harmony` tool parser turns
messages addressed `to=functions.NAME` into tool calls whose arguments (the message
body, raw JSON) stream as they arrive.
"""

from __future__ import annotations

import re

from dynamo.frontend.parsers.base import (
    CallGap, ToolCallDelta, find_first, new_call_id, partial_suffix, register_tool_parser,
)

MESSAGE = "<|message|>"
HEADER_STARTS = ("<|start|>", "<|channel|>")
BODY_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")


class HarmonyStream:
    """Events: ("text", channel, recipient, text) for body text (channel None for text
    outside any message), ("start", channel, recipient, header) when a body opens,
    ("end", channel, recipient, marker) when it closes."""

    def __init__(self) -> None:
        self._buf = ""
        self._in_header = False
        self._in_body = False
        self.channel: str | None = None
        self.recipient: str | None = None

    def feed(self, text: str) -> list[tuple]:
        self._buf += text
        events: list[tuple] = []
        while self._buf and self._step(events):
            pass
        return events

    def _step(self, events: list[tuple]) -> bool:
        buf = self._buf
        if self._in_body:
            i, marker = find_first(buf, BODY_ENDS)
            if marker is None:
                keep = partial_suffix(buf, BODY_ENDS)
                self._text(events, buf[:len(buf) - keep])
                self._buf = buf[len(buf) - keep:]
                return False
            self._text(events, buf[:i])
            events.append(("end", self.channel, self.recipient, marker))
            self._buf, self._in_body = buf[i + len(marker):], False
            self.channel = self.recipient = None
            return True
        if self._in_header:
            i = buf.find(MESSAGE)
            if i == -1:
                return False
            header = buf[:i]
            m = _CHANNEL.search(header)
            r = _RECIPIENT.search(header)
            self.channel = m.group(1) if m else None
            self.recipient = r.group(1) if r else None
            events.append(("start", self.channel, self.recipient, header))
            self._buf, self._in_header, self._in_body = buf[i + len(MESSAGE):], False, True
            return True
        i, marker = find_first(buf, HEADER_STARTS)
        if marker is None:
            keep = partial_suffix(buf, HEADER_STARTS)
            self._text(events, buf[:len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return False
        self._text(events, buf[:i])
        self._buf, self._in_header = buf[i:], True
        return True

    def _text(self, events: list[tuple], text: str) -> None:
        if text:
            events.append(("text", self.channel, self.recipient, text))

    def finish(self) -> list[tuple]:
        events: list[tuple] = []
        if self._buf and not self._in_header:
            self._text(events, self._buf)
        self._buf = ""
        if self._in_body:
            events.append(("end", self.channel, self.recipient, ""))
        self._in_body = self._in_header = False
        return events


@register_tool_parser("harmony")
class HarmonyToolParser:
    needs_special_tokens = True

    def __init__(self, tools=None) -> None:
        self._stream = HarmonyStream()
        self._calls = 0
        self._in_call = False
        self._gap = CallGap()  # whitespace after a call: layout unless text follows (as marked.py)

    @property
    def calls(self) -> int:
        return self._calls

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        return self._route(self._stream.feed(text))

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return self._route(self._stream.finish())

    def _route(self, events: list[tuple]) -> tuple[str, list[ToolCallDelta]]:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        for kind, _channel, recipient, text in events:
            is_call = bool(recipient and recipient.startswith("functions."))
            if kind == "start" and is_call:
                self._calls += 1
                self._in_call = True
                self._gap.block()
                deltas.append(ToolCallDelta(self._calls - 1, new_call_id(), recipient[len("functions."):], ""))
            elif kind == "end":
                if self._in_call:
                    self._gap.call()
                self._in_call = False
            elif kind == "text" and self._in_call:
                deltas.append(ToolCallDelta(self._calls - 1, arguments=text))
            elif kind == "text":
                content.append(self._gap.text(text))
        return "".join(content), deltas

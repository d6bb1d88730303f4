"""Thinking Machines' Inkling output (`inkling`, as reasoning and as tool-call parser): a sequence of
blocks, in any order and possibly repeated, each a message, an optional header, a content kind, a body:

    <|message_model|><|content_thinking|>reasoning...<|end_message|>
    <|message_model|><|content_text|>visible answer...<|end_message|>
    <|message_model|>get_weather<|content_invoke_tool_json|>{"name":"get_weather","args":{"city":"SF"}}<|end_message|>
    <|content_model_end_sampling|>

Every marker is one special token. The generation prompt usually ends with `<|message_model|>`, so the
output often starts at a content kind; sampling may end with `<|content_model_end_sampling|>` (dropped,
as is a message marker opened just for it), also in place of a block's `<|end_message|>`. Whitespace between blocks
is layout, not answer.

The reasoning parser sends thinking bodies to reasoning and text bodies to the answer; a tool block passes
through to the tool parser as `<|content_invoke_tool_json|>{...}<|end_message|>` (its header, the tool's
name, dropped: the JSON repeats it). Text outside any block (a model writing no markers) is the answer.
The tool parser turns each such block into one call, converted whole at its end marker; a body that is
not `{"name": ..., "args": {...}}`, or a block cut off before its end, stays in the answer as written.
"""

from __future__ import annotations

import json
import re

from dynamo.frontend.parsers.base import (
    BudgetTags,
    PromptReasoning,
    SteppedReasoning,
    ToolCallDelta,
    find_first,
    new_call_id,
    partial_suffix,
    register_reasoning_parser,
    register_tool_parser,
)
from dynamo.frontend.parsers.json_scan import strict_loads
from dynamo.frontend.parsers.marked import Inner, MarkedToolParser

MESSAGE = "<|message_model|>"
THINKING = "<|content_thinking|>"
TEXT = "<|content_text|>"
TOOL = "<|content_invoke_tool_json|>"
END = "<|end_message|>"
END_SAMPLING = "<|content_model_end_sampling|>"
KINDS = (THINKING, TEXT, TOOL)
MARKERS = (MESSAGE, *KINDS, END, END_SAMPLING)
# A header is a tool's name: one word. Text that cannot be one is the answer, so it is not held long.
_HEADER = re.compile(r"\s*[^\s<]{0,128}\s*")


class InklingReasoningParser(SteppedReasoning):
    needs_special_tokens = True
    # Closing the thinking block early opens a text block for the answer.
    budget_tags = BudgetTags(THINKING, END, END + MESSAGE + TEXT, starts_inside=False)

    def __init__(self) -> None:
        self._buf = ""
        self._kind: str | None = None  # the open block's content kind; None between blocks
        # Before a content kind, text may be the message's header: at the start too, since the prompt
        # usually opened the message (a tool block's name then comes first).
        self._header = True
        self._lead = True  # whitespace here is layout: the start, or right after a block

    def judge_prompt(self, tail: str) -> PromptReasoning:
        """A prompt ending in a thinking block's kind leaves the output inside the reasoning; one ending
        in a text block's kind (thinking switched off) leaves it in the answer."""
        tail = tail.rstrip()
        if tail.endswith(THINKING):
            return PromptReasoning.OPENED
        if tail.endswith(TEXT):
            return PromptReasoning.CLOSED
        return PromptReasoning.UNKNOWN

    def prompt_ended(self, where: PromptReasoning) -> None:
        if where is not PromptReasoning.UNKNOWN:
            self._kind = THINKING if where is PromptReasoning.OPENED else TEXT
            self._header = False

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        if self._kind is not None:
            return self._body_step(reasoning if self._kind == THINKING else content, content)
        if self._header:
            return self._header_step(content)
        return self._outside_step(content)

    def _body_step(self, out: list[str], content: list[str]) -> bool:
        marker = self._take_until(MARKERS, out)
        if marker is None:
            return False
        if self._kind == TOOL:
            # Whatever ended it (a new block too: its end marker was skipped), the tool parser sees it closed.
            content.append(END)
        self._kind = None
        self._enter(marker, content)
        return True

    def _header_step(self, content: list[str]) -> bool:
        buf = self._buf
        i, marker = find_first(buf, MARKERS)
        head = buf[:len(buf) - partial_suffix(buf, MARKERS)] if marker is None else buf[:i]
        if not _HEADER.fullmatch(head) or marker not in (None, *KINDS):
            self._header = False  # plain text, or no content kind followed: the answer after all
            return True
        if marker is None:
            return False  # may still be a tool's name: held until its content kind comes
        self._buf = buf[i + len(marker):]  # the header dropped: a tool's JSON names the tool itself
        self._enter(marker, content)
        return True

    def _outside_step(self, content: list[str]) -> bool:
        buf = self._buf
        if self._lead:
            buf = buf.lstrip()
            if not buf:
                self._buf = ""
                return False
        i, marker = find_first(buf, MARKERS)
        if marker is None:
            keep = partial_suffix(buf, MARKERS)
            # Trailing whitespace may be layout before the next block: held until text follows it.
            shown = buf[:len(buf) - keep].rstrip()
            content.append(shown)
            self._buf = buf[len(shown):]
            self._lead = self._lead and not shown
            return False
        content.append(buf[:i].rstrip())
        self._buf = buf[i + len(marker):]
        self._enter(marker, content)
        return True

    def _enter(self, marker: str, content: list[str]) -> None:
        """Go on after `marker`: a message's header, a block's body, or between blocks (an end marker;
        one that ends nothing is dropped too: markers are never the answer)."""
        self._header = marker == MESSAGE
        self._lead = True
        if marker in KINDS:
            self._kind = marker
            if marker == TOOL:
                content.append(TOOL)

    def finish(self) -> tuple[str, str]:
        buf, self._buf = self._buf, ""
        if self._kind == THINKING:
            return buf, ""
        if self._kind is not None:  # a cut-off tool block goes on unclosed: the tool parser keeps it as text
            return "", buf
        if self._header or not buf.strip():  # a header that no content kind followed; or layout
            return "", buf.strip()
        return "", buf


register_reasoning_parser("inkling")(InklingReasoningParser)


class _InklingCall:
    """One tool block, held until its end marker and then sent as one call (or none). Opened at a
    message (`header`), it must hold a tool's name and then the content kind before its JSON."""

    def __init__(self, index: int, header: bool) -> None:
        self.index = index
        self.emitted = 0
        self.failed = False
        self.cut_off = False
        self._text = "" if header else TOOL  # the body starts after TOOL
        self.in_body = not header  # TOOL seen
        self._opened = False  # the body's `{` seen: nothing more to check as it grows

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._text += text
        if not self._opened:
            i = self._text.find(TOOL)
            if i == -1:  # still the header
                head = self._text[:len(self._text) - partial_suffix(self._text, (TOOL,))]
                self.failed = not _HEADER.fullmatch(head)
            else:
                self.in_body = True
                body = self._text[i + len(TOOL):].lstrip()
                self.failed = not _HEADER.fullmatch(self._text[:i]) or (bool(body) and body[0] != "{")
                self._opened = bool(body) and not self.failed
        return []

    def close(self) -> list[ToolCallDelta]:
        i = self._text.find(TOOL)
        call = None if self.cut_off or i == -1 else parse_call(self._text[i + len(TOOL):])
        if call is None:
            return []
        self.emitted = 1
        return [ToolCallDelta(self.index, new_call_id(), call[0], json.dumps(call[1], ensure_ascii=False))]


def parse_call(body: str) -> tuple[str, dict] | None:
    """(name, arguments) of a tool block's JSON body; None when it is not `{"name": ..., "args": {...}}`."""
    try:
        value = strict_loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    name, args = value.get("name"), value.get("args", {})
    if args is None:
        args = {}
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return name, args


@register_tool_parser("inkling")
class InklingToolParser(MarkedToolParser):
    # A message marker opens a block too, so that a tool's name after it (with no reasoning parser to
    # drop it) is not shown; a message that is not a tool block is released as the model wrote it.
    start_markers = (TOOL, MESSAGE)
    end_marker = END
    needs_special_tokens = True

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._held = ""  # text that may begin the end-of-sampling marker

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return _InklingCall(first_index, header=marker == MESSAGE)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        text = self._held + text
        keep = partial_suffix(text, (END_SAMPLING,))
        self._held = text[len(text) - keep:]
        return self._feed_pieces(text[:len(text) - keep])

    def _feed_pieces(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Feed around each end-of-sampling marker, which is never shown."""
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        for n, piece in enumerate(text.split(END_SAMPLING)):
            if n:
                self._end_sampling(content, deltas)
            if piece:
                c, d = super().feed(piece)
                content.append(c)
                deltas.extend(d)
        return "".join(content), deltas

    def _end_sampling(self, content: list[str], deltas: list[ToolCallDelta]) -> None:
        inner = self._inner
        if not isinstance(inner, _InklingCall):
            return
        if inner.in_body:  # it ends the tool block in place of its end marker (none is shown if not a call)
            self._pass(self._buf, deltas)
            self._buf = ""
            shown: list[str] = []
            self._close(shown, deltas)
            content += shown
            return
        # A message opened only to end sampling: its marker is not shown (nor is a header, if blank).
        header = (self._raw + self._buf)[len(MESSAGE):]
        self._inner, self._raw, self._buf = None, "", ""
        self._emit_content(content, header.strip())

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        held, self._held = self._held, ""
        content, deltas = self._feed_pieces(held)
        if isinstance(self._inner, _InklingCall):
            self._inner.cut_off = True  # no end marker: the call may be incomplete, so it stays text
        c, d = super().finish()
        return content + c, deltas + d

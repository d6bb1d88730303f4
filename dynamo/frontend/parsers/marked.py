"""The shared streaming shell of marker-delimited tool-call formats.

Content streams until a start marker; the text after it goes to a format-specific
inner stream, which turns it into tool-call deltas as it arrives (name first, then
arguments), until the end marker (or the end of output, for formats without one).
A marker split across tokens is held back, never shown. A block that turns out not
to be a call (nothing parseable in it) is released as plain content, markers
included, so malformed output degrades to text instead of failing the request.
Whitespace after a call is layout only while nothing but another block or the end
follows it (`CallGap`); so is whitespace that opens the output, when a call's block is
what follows it (DeepSeek V3.2 writes `\n\n` before its calls, GLM-4.5 `\n`): held,
never streamed as a content delta of its own. The content is the same however the
output was split.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

from dynamo.frontend.parsers.base import CallGap, CallLayout, ToolCallDelta, find_first, new_call_id, partial_suffix
from dynamo.frontend.parsers.json_scan import ArgsCursor, ValueScanner, loads_or_none, skip_ws


class Inner(Protocol):
    emitted: int  # calls started (names sent)
    failed: bool  # the text cannot be a call of this format
    # Optional (False when absent): the text fed so far ends inside a JSON string, where the block's end
    # marker is a value's text. Inners whose body is JSON say so; the shell then reads on past it.
    in_string: bool

    def feed(self, text: str) -> list[ToolCallDelta]: ...

    def close(self) -> list[ToolCallDelta]: ...


class MarkedToolParser:
    start_markers: tuple[str, ...] = ()
    end_marker: str | None = None
    # Output that begins (after whitespace) with one of these opens a block with no marker.
    bare_starts: tuple[str, ...] = ()
    needs_special_tokens = False
    # How the format's calls are written, where a grammar can say it (`CallLayout`; None: it cannot).
    call_layout: CallLayout | None = None

    def __init__(self, tools: list[dict] | None = None) -> None:
        self.tools = tools or []
        self._buf = ""
        self._inner: Inner | None = None
        self._raw = ""
        self._calls = 0
        self._seen_text = False
        self._lead = ""  # whitespace opening the output, held until text or a block follows it
        self._before = ""  # that whitespace, where a block followed it: shown with the block if it is no call
        self._gap = CallGap()

    @property
    def calls(self) -> int:
        return self._calls

    def make_inner(self, marker: str, first_index: int) -> Inner:
        raise NotImplementedError

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        self._buf += text
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        while self._buf:
            if self._inner is None:
                if not self._content_step(content):
                    break
            elif not self._call_step(content, deltas):
                break
        return "".join(content), deltas

    def _content_step(self, content: list[str]) -> bool:
        buf = self._buf
        if not self._seen_text and self.bare_starts:
            head = skip_ws(buf, 0)
            if head == len(buf):
                return False  # only whitespace so far: the bare start may still come
            if any(buf.startswith(s, head) for s in self.bare_starts):
                self._open("", head)
                return True
        i, marker = find_first(buf, self.start_markers)
        if marker is not None:
            self._emit_content(content, buf[:i])
            self._open(marker, i + len(marker))
            return True
        keep = partial_suffix(buf, self.start_markers)
        self._emit_content(content, buf[:len(buf) - keep])
        self._buf = buf[len(buf) - keep:]
        return False

    def _emit_content(self, content: list[str], text: str) -> None:
        text = self._gap.text(text)
        if not self._seen_text:
            if not text.strip():
                self._lead += text
                return
            text, self._lead = self._lead + text, ""
        if text:
            content.append(text)
            self._seen_text = self._seen_text or bool(text.strip())

    def _open(self, marker: str, rest_at: int) -> None:
        self._inner = self.make_inner(marker, self._calls)
        self._raw = marker
        self._before, self._lead = self._lead, ""
        self._buf = self._buf[rest_at:]
        self._seen_text = True
        self._gap.block()

    def _call_step(self, content: list[str], deltas: list[ToolCallDelta]) -> bool:
        buf, end = self._buf, self.end_marker
        if end is None:
            self._pass(buf, deltas)
            self._buf = ""
            return self._abandoned(content) and False
        j = buf.find(end)
        if j == -1:
            keep = partial_suffix(buf, (end,))
            self._pass(buf[:len(buf) - keep], deltas)
            self._buf = buf[len(buf) - keep:]
            return self._abandoned(content)
        self._pass(buf[:j], deltas)
        self._buf = buf[j + len(end):]
        if getattr(self._inner, "in_string", False):
            # Inside a JSON string (an argument's `print('</tool_call>')`) the marker is the argument's
            # text, not the block's end. The inner scanner already knows, from the text it was fed.
            self._pass(end, deltas)
            self._abandoned(content)
            return True
        self._raw += end
        self._close(content, deltas)
        return True

    def _pass(self, text: str, deltas: list[ToolCallDelta]) -> None:
        if text:
            self._raw += text
            deltas.extend(self._inner.feed(text))

    def _abandoned(self, content: list[str]) -> bool:
        """A block that is plainly not a call is released as content at once (rather
        than held to the end marker), and content streaming resumes."""
        inner = self._inner
        if inner is None or inner.emitted or not getattr(inner, "failed", False):
            return False
        raw, self._inner, self._raw = self._before + self._raw, None, ""
        self._before = ""
        self._emit_content(content, raw)
        return True

    def _close(self, content: list[str], deltas: list[ToolCallDelta]) -> None:
        inner, self._inner = self._inner, None
        deltas.extend(inner.close())
        if inner.emitted == 0:
            self._emit_content(content, self._before + self._raw)  # not a call after all: show what the model wrote
        else:
            self._gap.call()
        self._calls += inner.emitted
        self._raw = self._before = ""

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        if self._inner is not None:
            self._pass(self._buf, deltas)
            self._buf = ""
            self._close(content, deltas)
        elif self._buf:
            self._emit_content(content, self._buf)
            self._buf = ""
        if self._lead:  # output that is only whitespace: the answer as written
            content.append(self._lead)
            self._lead = ""
        return "".join(content), deltas


class JsonCalls:
    """Inner stream for JSON call objects `{"name": ..., "arguments"|"parameters": ...}`,
    one or several (in a `[...]` list, or separated by `,` or `;`). With the name first
    (every documented format), the name is sent as soon as it is complete and the
    arguments stream raw; otherwise the call is sent whole when its object closes. `offered`: where a
    block with no marker may be an answer rather than calls (llama3_json's bare objects), its first
    object is a call only when it names one of these tools (an answer `{"name": "Bob", ..}` is text)."""

    _HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*(,\s*"(?:arguments|parameters)"\s*:)?')

    def __init__(self, first_index: int, offered: frozenset[str] | None = None) -> None:
        self.emitted = 0
        self._offered = offered
        self._first = first_index
        self._buf = ""
        self._pos = 0  # where the current (or next) object starts
        self._obj: int | None = None
        self._obj_scan: ValueScanner | None = None
        self._named = False
        self._args: ArgsCursor | None = None
        self.failed = False

    def _index(self) -> int:
        return self._first + self.emitted - 1

    @property
    def in_string(self) -> bool:
        return self._obj is not None and not self.failed and self._obj_scan.in_string

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        while not self.failed and self._step(out):
            pass
        return out

    def _step(self, out: list[ToolCallDelta]) -> bool:
        buf = self._buf
        if self._obj is None:
            i = self._pos
            while i < len(buf) and buf[i] in " \t\r\n,;[]":
                i += 1
            self._pos = i
            if i >= len(buf):
                return False
            if buf[i] != "{":
                self.failed = True
                return False
            self._obj, self._named, self._args = i, False, None
            self._obj_scan = ValueScanner(i)
        obj = self._obj
        if not self._named or self._args is None:
            m = self._HEAD.match(buf, obj)
            if m and not self._named:
                name = loads_or_none('"' + m.group(1) + '"')
                if isinstance(name, str) and name and not self._refused(name):
                    self.emitted += 1
                    self._named = True
                    out.append(ToolCallDelta(self._index(), new_call_id(), name, ""))
            if self.failed:
                return False
            if m and self._named and m.group(2):
                self._args = ArgsCursor(m.end())
        if self._args is not None:
            piece = self._args.advance(buf)
            if piece:
                out.append(ToolCallDelta(self._index(), arguments=piece))
        end = self._obj_scan.scan(buf)
        if end is None:
            return False
        self._finish_object(buf[obj:end], out)
        self._obj, self._pos = None, end
        return True

    def _finish_object(self, raw: str, out: list[ToolCallDelta]) -> None:
        if self._named and self._args is not None:
            return
        value = loads_or_none(raw)
        if not isinstance(value, dict):
            if not self._named:
                self.failed = True
            return
        args = value.get("arguments", value.get("parameters", {}))
        args_text = args if isinstance(args, str) else json_dumps(args)
        if self._named:  # name-first but no arguments key in the head: send them whole
            out.append(ToolCallDelta(self._index(), arguments=args_text))
            return
        name = value.get("name")
        if not isinstance(name, str) or not name or self._refused(name):
            self.failed = True
            return
        self.emitted += 1
        out.append(ToolCallDelta(self._index(), new_call_id(), name, args_text))

    def _refused(self, name: str) -> bool:
        """A first object naming no offered tool: not a call (`failed`: the block is released as text)."""
        if self._offered is None or self.emitted or name in self._offered:
            return False
        self.failed = True
        return True

    def close(self) -> list[ToolCallDelta]:
        if self._obj is not None and not self._named:
            self.failed = True
        return []


def json_dumps(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


class HeaderCalls:
    """Inner stream for formats where a header regex carries the function name and the
    arguments follow as one raw JSON value (DeepSeek, Mistral `name[ARGS]{...}`, Kimi).
    `trailer` is text that closes a call after its arguments (skipped); `call` turns the header's
    group 1 into (name, call id) where the model names its calls itself."""

    def __init__(self, first_index: int, header: re.Pattern, trailer: re.Pattern | None = None,
                 call: Callable[[str], tuple[str, str]] | None = None) -> None:
        self.emitted = 0
        self._first = first_index
        self._header = header
        self._trailer = trailer
        self._call = call
        self._buf = ""
        self._pos = 0
        self._args: ArgsCursor | None = None

    @property
    def in_string(self) -> bool:
        return self._args is not None and self._args.in_string

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        while True:
            if self._args is None:
                m = self._header.search(self._buf, self._pos)
                if not m:
                    return out
                self.emitted += 1
                name, call_id = (self._call or _new_id)(m.group(1).strip())
                out.append(ToolCallDelta(self._first + self.emitted - 1, call_id, name, ""))
                self._args = ArgsCursor(m.end())
            piece = self._args.advance(self._buf)
            if piece:
                out.append(ToolCallDelta(self._first + self.emitted - 1, arguments=piece))
            if not self._args.done:
                return out
            self._pos = self._args.end(self._buf) or len(self._buf)
            if self._trailer is not None:
                t = self._trailer.match(self._buf, self._pos)
                if t:
                    self._pos = t.end()
            self._args = None

    def close(self) -> list[ToolCallDelta]:
        return []


def _new_id(name: str) -> tuple[str, str]:
    return name, new_call_id()

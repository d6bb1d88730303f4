"""Parser interfaces and registries for the output stage: reasoning parsers split
model text into reasoning and content; tool-call parsers split content into plain
text and OpenAI tool-call deltas. Parsers are pure text -> deltas: no tokens, no I/O.

Names and flags follow NVIDIA Dynamo (`--dyn-tool-call-parser`, `--dyn-reasoning-parser`).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

import msgspec


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """One streamed piece of a tool call. The first piece of a call carries its `id`
    and `name`; later pieces carry more `arguments` text (concatenation = JSON)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


def accumulate_call(calls: dict[int, dict], piece: ToolCallDelta) -> dict:
    """Add a streamed piece to its call in `calls` (keyed by index; the first piece names it) and return
    the call so far, in the shape of a chat message's `tool_calls` entry."""
    call = calls.setdefault(piece.index, {"id": piece.id, "type": "function",
                                          "function": {"name": piece.name, "arguments": ""}})
    call["function"]["arguments"] += piece.arguments
    return call


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class CallGap:
    """The whitespace right after a tool call, in a tool parser's plain content. Until text follows it,
    it may be layout (between calls, or after the last one), dropped then; once text follows, it is that
    text's (a blank line, a code line's indentation) and is shown with it. Judged on the whole gap, not
    on each piece fed, so the answer is the same however the model's output was cut into tokens."""

    def __init__(self) -> None:
        self._after_call = False
        self._held = ""

    def text(self, text: str) -> str:
        """Plain content as it comes -> what can be shown now."""
        if not self._after_call or not text:
            return text
        if not text.strip():
            self._held += text
            return ""
        shown, self._held, self._after_call = self._held + text, "", False
        return shown

    def call(self) -> None:
        """A call ended: whitespace from here on may be layout."""
        self._after_call, self._held = True, ""

    def block(self) -> None:
        """A block opens: the whitespace held before it was layout (as is what is held when the output ends)."""
        self._held = ""


@dataclass(frozen=True)
class CallLayout:
    """How a format writes its calls, for a grammar that must leave the model room to write them (the
    engine's structural tag, `frontend/tool_guidance.py`). By default a block is `start`, calls, `end`, each
    call `{"name": NAME, "<args_key>": ARGS}`: a `listed` block holds a JSON list of calls (one block);
    otherwise each block holds one call and blocks follow one another, `between` apart.

    A format that names each call in text rather than in a JSON object has a `head`: one block holds its
    calls, `between` apart, each `head` ARGS `tail`, where `{name}` in the head stands for the function's
    name and `{index}` for a number the model counts its calls with (Kimi's `functions.NAME:0`). `style`
    says how ARGS are written, in xgrammar's words for a JSON schema's `style` ("json", or one parameter per
    tag: "qwen_xml", "glm_xml", "deepseek_xml", "minimax_xml"). `alternative`: another way the same parser
    reads calls (Mistral's JSON list beside its `name[ARGS]` calls), admitted as well."""

    start: str
    end: str
    args_key: str = "arguments"
    listed: bool = False
    between: str = "\n"
    head: str | None = None
    tail: str = ""
    style: str = "json"
    alternative: CallLayout | None = None


class ToolParser(Protocol):
    # Markers may be special tokens that plain detokenization would drop.
    needs_special_tokens: bool

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """More model text -> (plain content safe to show now, tool-call deltas)."""

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """End of stream: whatever was held back."""

    @property
    def calls(self) -> int:
        """Tool calls started so far."""


@dataclass(frozen=True)
class BudgetTags:
    """Where a parser's reasoning opens and ends in the model's text, and what closes it early:
    what a reasoning budget needs (`frontend/thinking_budget.py`). `close` starts with `end`."""

    start: str
    end: str
    close: str
    starts_inside: bool  # the chat template opened the reasoning: output starts in it


class PromptReasoning(enum.Enum):
    """Where the rendered prompt leaves the model's reasoning, as the model's reasoning parser reads
    the prompt's end: judged once per request, so that the parser's split and the reasoning budget
    start from the same answer."""

    OPENED = "opened"  # the template opened it (ends with the opening tag): output starts inside
    CLOSED = "closed"  # the template closed it (thinking switched off): the output is all answer
    UNKNOWN = "unknown"  # neither, or not judged: the parser's own default (`BudgetTags.starts_inside`)


class ReasoningParser(Protocol):
    needs_special_tokens: bool
    # None: a budget cannot be enforced by closing this parser's reasoning (it has no such tags).
    budget_tags: BudgetTags | None

    def judge_prompt(self, tail: str) -> PromptReasoning:
        """Where a rendered prompt ending with `tail` leaves the reasoning; changes nothing."""

    def prompt_ended(self, where: PromptReasoning) -> None:
        """Start where this request's prompt left the reasoning (`judge_prompt`'s answer)."""

    def feed(self, text: str) -> tuple[str, str]:
        """More model text -> (reasoning, content)."""

    def finish(self) -> tuple[str, str]:
        ...


ToolFactory = Callable[[list[dict] | None], ToolParser]
ReasoningFactory = Callable[[], ReasoningParser]

TOOL_PARSERS: dict[str, ToolFactory] = {}
REASONING_PARSERS: dict[str, ReasoningFactory] = {}


class SteppedReasoning:
    """A reasoning parser that works through its buffer one step at a time: `_step` moves text out of
    `_buf` into the reasoning or the answer, and says whether it can go on (False: it waits for more)."""

    _buf: str

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        raise NotImplementedError

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._buf and self._step(reasoning, content):
            pass
        return "".join(reasoning), "".join(content)

    def _take_until(self, markers: tuple[str, ...], out: list[str]) -> str | None:
        """Move `_buf` into `out` up to the first of `markers`, which is consumed and returned; with
        none in it, all but what may be a marker's start (held back), and None."""
        buf = self._buf
        i, marker = find_first(buf, markers)
        if marker is None:
            keep = partial_suffix(buf, markers)
            out.append(buf[:len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return None
        out.append(buf[:i])
        self._buf = buf[i + len(marker):]
        return marker


def register_tool_parser(*names: str):
    def wrap(factory):
        for name in names:
            TOOL_PARSERS[name] = factory
            TOOL_PARSERS.setdefault(name.replace("_", "-"), factory)  # Dynamo accepts dash aliases
        return factory
    return wrap


def register_reasoning_parser(*names: str):
    def wrap(factory):
        for name in names:
            REASONING_PARSERS[name] = factory
            REASONING_PARSERS.setdefault(name.replace("_", "-"), factory)
        return factory
    return wrap


def partial_suffix(buf: str, markers: tuple[str, ...] | list[str]) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of a marker: text
    that must be held back because the next token may complete the marker."""
    best = 0
    for marker in markers:
        for k in range(min(len(buf), len(marker) - 1), best, -1):
            if marker.startswith(buf[-k:]):
                best = k
                break
    return best


def find_first(buf: str, markers: tuple[str, ...] | list[str]) -> tuple[int, str | None]:
    """Earliest occurrence of any marker: (index, marker) or (-1, None)."""
    best, which = -1, None
    for marker in markers:
        i = buf.find(marker)
        if i != -1 and (best == -1 or i < best):
            best, which = i, marker
    return best, which

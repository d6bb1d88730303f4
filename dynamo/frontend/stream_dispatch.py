"""NVIDIA Dynamo's early-dispatch events on streamed chat completions, for agent harnesses that act
before an answer ends (`--enable-streaming-tool-dispatch`, `--enable-streaming-reasoning-dispatch`):

    event: tool_call_dispatch
    data: {"choice_index": 0, "tool_call": {"index": 0, "id": ..., "type": "function",
                                            "function": {"name": ..., "arguments": "<complete JSON>"}}}

once per tool call, as soon as its arguments are complete, ahead of the chunk that completes them, so
a harness can start the tool while the model writes the next call; and

    event: reasoning_dispatch
    data: {"index": 0, "reasoning_content": "<the whole reasoning block>"}

once per reasoning block, when it ends (the first delta after it that carries content or a call, or
the end of the answer), keyed by the frontend's reasoning field name. Dynamo's engines send each call
whole in one chunk; ours stream the arguments, so a call is complete once they parse as JSON (an
object cannot grow after its closing brace).
"""

from __future__ import annotations

from typing import Any

import msgspec

from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.parsers.base import ToolCallDelta, accumulate_call
from dynamo.frontend.sse import named_event


class StreamDispatch:
    """The dispatch events of one streamed chat answer (all its choices)."""

    def __init__(self, tools: bool, reasoning: bool, reasoning_field: str = "reasoning_content") -> None:
        self.tools = tools
        self.reasoning = reasoning
        self.reasoning_field = reasoning_field
        self._thinking: dict[int, list[str]] = {}  # choice -> its open reasoning block
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice -> call index -> the call so far
        self._sent: set[tuple[int, int]] = set()

    def events(self, choice: int, d: ChoiceDelta) -> bytes:
        """The events `d` (the choice's next delta) brings, to send before its chunk."""
        out = b""
        if self.reasoning:
            if d.reasoning:
                self._thinking.setdefault(choice, []).append(d.reasoning)
            if d.content or d.tool_calls:
                out += self.end_of_reasoning(choice)
        if self.tools:
            for call in d.tool_calls:
                out += self._call_piece(choice, call)
        return out

    def end_of_reasoning(self, choice: int) -> bytes:
        """The choice's reasoning block, if one is open: the answer moved on, or ended."""
        parts = self._thinking.pop(choice, None)
        if not parts:
            return b""
        return named_event("reasoning_dispatch", {"index": choice, self.reasoning_field: "".join(parts)})

    def _call_piece(self, choice: int, piece: ToolCallDelta) -> bytes:
        key = (choice, piece.index)
        call = accumulate_call(self._calls.setdefault(choice, {}), piece)
        if key in self._sent or not (call["id"] and call["function"]["name"]):
            return b""
        # Only a closing brace can complete an object: long arguments are not re-parsed per token.
        if "}" not in piece.arguments and piece.arguments or not _is_object(call["function"]["arguments"]):
            return b""
        self._sent.add(key)
        return named_event("tool_call_dispatch", {"choice_index": choice, "tool_call": {"index": piece.index, **call}})


def _is_object(text: str) -> bool:
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except msgspec.DecodeError:
        return False


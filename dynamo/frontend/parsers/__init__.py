"""Output parsers, chosen by name from the worker's model card: reasoning first, then
tool calls (Dynamo's order). Importing this package registers every built-in parser."""

from dynamo.frontend.parsers import (  # noqa: F401
    gemma4,
    harmony,
    inkling,
    minimax_m3,
    pythonic,
    reasoning,
    tagged_calls,
    tool_formats,
)
from dynamo.frontend.parsers.base import (
    REASONING_PARSERS,
    CallLayout,
    TOOL_PARSERS,
    ReasoningParser,
    ToolCallDelta,
    ToolParser,
)
from dynamo.llm.parser_names import canonical_parser_name

__all__ = ["REASONING_PARSERS", "TOOL_PARSERS", "CallLayout", "ReasoningParser", "ToolCallDelta", "ToolParser",
           "make_reasoning_parser", "make_tool_parser", "tool_call_layout"]


def make_tool_parser(name: str, tools: list[dict] | None = None) -> ToolParser:
    try:
        return TOOL_PARSERS[canonical_parser_name(name)](tools)
    except KeyError:
        raise ValueError(f"unknown tool-call parser {name!r}; known: {sorted(TOOL_PARSERS)}") from None


def tool_call_layout(name: str) -> CallLayout | None:
    """How the named format writes its calls, where a grammar can say it (None: it cannot, or no such format)."""
    factory = TOOL_PARSERS.get(canonical_parser_name(name))
    return getattr(factory, "call_layout", None)


def make_reasoning_parser(name: str) -> ReasoningParser:
    try:
        return REASONING_PARSERS[canonical_parser_name(name)]()
    except KeyError:
        raise ValueError(f"unknown reasoning parser {name!r}; known: {sorted(REASONING_PARSERS)}") from None

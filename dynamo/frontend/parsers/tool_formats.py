"""Tool-call formats built on the marker shell (`marked.py`), one class per model
family's documented output:

- hermes (Hermes, Qwen2.5/Qwen3): `<tool_call>{"name": .., "arguments": ..}</tool_call>`, repeated
- llama3_json (Llama 3.1/3.2 JSON): `<|python_tag|>{"name": .., "parameters": ..}` or a bare
  JSON object opening the output; several separated by `;`
- mistral: `[TOOL_CALLS][{"name": .., "arguments": ..}, ...]` (`[TOOL_CALLS] [` with SentencePiece
  tokenizers) or, with newer tokenizers, `[TOOL_CALLS]name[ARGS]{..}` repeated
- default (Dynamo's default): `<TOOLCALL>[{..}, ..]</TOOLCALL>` or `<|python_tag|>{..}`
- deepseek_v3: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name
  ```json {..} ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`
- deepseek_v3_1: the same block, each call `<｜tool▁call▁begin｜>name<｜tool▁sep｜>{..}<｜tool▁call▁end｜>`
- kimi_k2 (Kimi K2, K2.5): `<|tool_calls_section_begin|><|tool_call_begin|>functions.name:0
  <|tool_call_argument_begin|>{..}<|tool_call_end|>...<|tool_calls_section_end|>`; the call's id is
  the model's own `functions.name:N`, which its chat template expects back
- nemotron_deci (Llama Nemotron): `<TOOLCALL>[{..}, ..]</TOOLCALL>`
- jamba (AI21 Jamba): `<tool_calls>[{..}, ..]</tool_calls>`
- phi4 (Phi-4-mini): `functools[{..}, ..]`

Tagged-parameter formats (Qwen3-Coder, GLM, MiniMax, DeepSeek V3.2) are in `tagged_calls.py`.
"""

from __future__ import annotations

import re

from dynamo.frontend.parsers.base import CallLayout, register_tool_parser
from dynamo.frontend.parsers.marked import HeaderCalls, Inner, JsonCalls, MarkedToolParser


def _json_block(names: tuple[str, ...], start: str, end: str | None, specials: bool = True) -> type:
    """A format whose block (between `start` and `end`) is JSON call objects, or a list of them (what a
    grammar asks for: `call_layout`)."""

    class Parser(MarkedToolParser):
        start_markers = (start,)
        end_marker = end
        needs_special_tokens = specials
        call_layout = CallLayout(start, end or "", listed=True)

        def make_inner(self, marker: str, first_index: int) -> Inner:
            return JsonCalls(first_index)

    Parser.__name__ = Parser.__qualname__ = "".join(n.title() for n in names[0].split("_")) + "Parser"
    return register_tool_parser(*names)(Parser)


_json_block(("nemotron_deci",), "<TOOLCALL>", "</TOOLCALL>")
_json_block(("jamba",), "<tool_calls>", "</tool_calls>")
_json_block(("phi4",), "functools", None, specials=False)


@register_tool_parser("hermes", "qwen25", "qwen3")
class HermesParser(MarkedToolParser):
    start_markers = ("<tool_call>",)
    end_marker = "</tool_call>"
    call_layout = CallLayout("<tool_call>\n", "\n</tool_call>")  # as Qwen's template shows its calls

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return JsonCalls(first_index)


@register_tool_parser("llama3_json")
class Llama3JsonParser(MarkedToolParser):
    start_markers = ("<|python_tag|>",)
    bare_starts = ("{",)
    needs_special_tokens = True
    # Meta's JSON tool calling: bare objects (`<|python_tag|>` is its built-in tools' marker).
    call_layout = CallLayout("", "", args_key="parameters", between="; ")

    def make_inner(self, marker: str, first_index: int) -> Inner:
        # A bare object may be the answer itself (a response_format's JSON, admitted beside the calls):
        # it opens calls only when it names an offered tool.
        offered = frozenset(t.get("function", {}).get("name") for t in self.tools) if self.tools else None
        return JsonCalls(first_index, offered if not marker else None)


_MISTRAL_HEADER = re.compile(r"\s*(?:\[TOOL_CALLS\])?\s*([A-Za-z0-9_.\-]+)\[ARGS\]")


class _MistralInner:
    """Chooses between the JSON-list form and the `name[ARGS]{..}` form on first sight."""

    def __init__(self, first_index: int) -> None:
        self._first = first_index
        self._inner: Inner | None = None
        self._pending = ""

    @property
    def emitted(self) -> int:
        return self._inner.emitted if self._inner is not None else 0

    @property
    def in_string(self) -> bool:
        return self._inner is not None and self._inner.in_string

    def feed(self, text: str):
        if self._inner is None:
            self._pending += text
            head = self._pending.lstrip()
            if not head:
                return []
            self._inner = (JsonCalls(self._first) if head[0] in "[{"
                           else HeaderCalls(self._first, _MISTRAL_HEADER))
            text, self._pending = self._pending, ""
        return self._inner.feed(text)

    def close(self):
        return self._inner.close() if self._inner is not None else []


@register_tool_parser("mistral")
class MistralParser(MarkedToolParser):
    start_markers = ("[TOOL_CALLS]",)
    needs_special_tokens = True
    # Which form a model writes depends on its tokenizer's version, which the parser's name does not say: both
    # (the list also after a space, `[TOOL_CALLS] [`, as the template writes it for SentencePiece tokenizers).
    call_layout = CallLayout("", "", head="[TOOL_CALLS]{name}[ARGS]", between="",
                             alternative=CallLayout("[TOOL_CALLS]", "", listed=True))

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return _MistralInner(first_index)


@register_tool_parser("default")
class DefaultParser(MarkedToolParser):
    """Dynamo's parser when a worker names none: `<TOOLCALL>[..]</TOOLCALL>` (Nemotron)
    and Llama's `<|python_tag|>`."""

    start_markers = ("<TOOLCALL>", "<|python_tag|>")
    needs_special_tokens = True
    call_layout = CallLayout("<TOOLCALL>", "</TOOLCALL>", listed=True)

    def __init__(self, tools=None) -> None:
        super().__init__(tools)
        self.end_marker = None

    def make_inner(self, marker: str, first_index: int) -> Inner:
        self.end_marker = "</TOOLCALL>" if marker == "<TOOLCALL>" else None
        return JsonCalls(first_index)


_DS_HEADER = re.compile(r"<｜tool▁call▁begin｜>(?:function)?<｜tool▁sep｜>([^\n]+)\n```(?:json)?\s*\n")
_DS_TRAILER = re.compile(r"\s*```\s*<｜tool▁call▁end｜>")


class _DeepSeekCalls(MarkedToolParser):
    """DeepSeek's calls block; its versions differ in how each call is headed (`header`, `trailer`)."""

    start_markers = ("<｜tool▁calls▁begin｜>",)
    end_marker = "<｜tool▁calls▁end｜>"
    needs_special_tokens = True
    header: re.Pattern
    trailer: re.Pattern

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return HeaderCalls(first_index, self.header, self.trailer)


@register_tool_parser("deepseek_v3")
class DeepSeekV3Parser(_DeepSeekCalls):
    header, trailer = _DS_HEADER, _DS_TRAILER
    # As DeepSeek V3's chat template writes its calls (a newline before each call after the first).
    call_layout = CallLayout("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                             head="<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n",
                             tail="\n```<｜tool▁call▁end｜>")


class JsonListParser(MarkedToolParser):
    """`tool_choice: required` with no format parser: the engine was asked (structured
    output) for a JSON list of `{"name", "parameters"}` objects, as vLLM does."""

    bare_starts = ("[", "{")

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return JsonCalls(first_index)


_DS31_HEADER = re.compile(r"<｜tool▁call▁begin｜>\s*([^<\n]+?)\s*<｜tool▁sep｜>\s*")
_DS31_TRAILER = re.compile(r"\s*<｜tool▁call▁end｜>")


@register_tool_parser("deepseek_v3_1")
class DeepSeekV31Parser(_DeepSeekCalls):
    header, trailer = _DS31_HEADER, _DS31_TRAILER
    call_layout = CallLayout("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>",
                             head="<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>", tail="<｜tool▁call▁end｜>", between="")


_KIMI_HEADER = re.compile(r"<\|tool_call_begin\|>\s*([\w.\-]+:\d+)\s*<\|tool_call_argument_begin\|>\s*")
_KIMI_TRAILER = re.compile(r"\s*<\|tool_call_end\|>")
_KIMI_ID = re.compile(r"(?:functions\.)?(.+):\d+")
_KIMI_SECTIONS = {"<|tool_calls_section_begin|>": "<|tool_calls_section_end|>",
                  "<|tool_call_section_begin|>": "<|tool_call_section_end|>"}


def _kimi_call(function_id: str) -> tuple[str, str]:
    """(name, call id) of Kimi's `functions.get_weather:0`: the id is kept as the model wrote it."""
    m = _KIMI_ID.fullmatch(function_id)
    return (m.group(1) if m else function_id), function_id


@register_tool_parser("kimi_k2", "kimi_k25")
class KimiK2Parser(MarkedToolParser):
    start_markers = tuple(_KIMI_SECTIONS)
    needs_special_tokens = True
    # The ids the model counts (`functions.NAME:N`) are its own: any number (the chat template's spelling of
    # the section's markers; the parser reads the singular `tool_call_section` too).
    call_layout = CallLayout("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>",
                             head="<|tool_call_begin|>functions.{name}:{index}<|tool_call_argument_begin|>",
                             tail="<|tool_call_end|>", between="")

    def make_inner(self, marker: str, first_index: int) -> Inner:
        self.end_marker = _KIMI_SECTIONS[marker]
        return HeaderCalls(first_index, _KIMI_HEADER, _KIMI_TRAILER, call=_kimi_call)

"""Tool-call formats whose arguments are tagged parameters, not JSON: each parameter is sent as a
JSON member once its closing tag arrives, typed by the tool's JSON schema (a parameter the schema
calls a string stays a string; numbers, booleans, arrays and objects are decoded; a value that
does not decode stays text). The name is sent as soon as it is complete.

- qwen3_coder (Qwen3-Coder, Qwen3.5; also nemotron_nano, Nemotron 3 Nano):
  `<tool_call><function=NAME><parameter=KEY>VALUE</parameter>...</function></tool_call>`
- minimax_m2 (MiniMax M2, M2.1, M2.5): `<minimax:tool_call><invoke name="NAME"><parameter
  name="KEY">VALUE</parameter>...</invoke>...</minimax:tool_call>`
- deepseek_v3_2 (DeepSeek V3.2, DSML): `<｜DSML｜function_calls><｜DSML｜invoke name="NAME">
  <｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>...</｜DSML｜invoke>
  </｜DSML｜function_calls>`; `string="true"` keeps the value text, `"false"` decodes it as JSON.
- deepseek_v4 (DeepSeek V4): the same DSML in a `<｜DSML｜tool_calls>...</｜DSML｜tool_calls>` block.
- glm45, glm47 (GLM-4.5/4.6, GLM-4.7): `<tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE
  </arg_value>...</tool_call>`, one call per block (4.5 puts a newline after the name and between
  tags, 4.7 none).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dynamo.frontend.parsers.base import CallLayout, ToolCallDelta, new_call_id, register_tool_parser
from dynamo.frontend.parsers.json_scan import loads_or_none
from dynamo.frontend.parsers.marked import MarkedToolParser


def schema_types(tools: list[dict] | None) -> dict[str, dict[str, str]]:
    """{function name: {parameter: JSON-schema type}} from the request's tools."""
    types: dict[str, dict[str, str]] = {}
    for tool in tools or []:
        fn = tool.get("function") or {}
        props = ((fn.get("parameters") or {}).get("properties") or {})
        types[fn.get("name", "")] = {k: (v or {}).get("type", "string") if isinstance(v, dict) else "string"
                                     for k, v in props.items()}
    return types


def typed_value(raw: str, kind: str | None, as_string: bool | None = None):
    """A parameter's value: text when the schema (or the format's own flag) says string, else decoded."""
    if as_string or (as_string is None and (kind or "string") == "string"):
        return raw
    decoded = loads_or_none(raw.strip())
    return decoded if decoded is not None else raw


@dataclass(frozen=True)
class TagFormat:
    function: re.Pattern  # a function's opening tag; group 1 is its name
    function_end: str
    param: re.Pattern  # one whole parameter: groups key, value, and optionally `string`
    param_end: str
    param_start: str  # text that opens a parameter (to tell a complete one from a stray closing tag)


class TaggedCalls:
    """Inner stream for formats of `TagFormat`: any number of functions per block."""

    def __init__(self, first_index: int, fmt: TagFormat, types: dict[str, dict[str, str]]) -> None:
        self.emitted = 0
        self.failed = False
        self._first = first_index
        self._fmt = fmt
        self._types = types
        self._buf = ""
        self._pos = 0
        self._name: str | None = None
        self._params = 0
        self._searched = 0

    def _index(self) -> int:
        return self._first + self.emitted - 1

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        fmt = self._fmt
        while True:
            if self._name is None:
                m = fmt.function.search(self._buf, self._pos)
                if not m:
                    return out
                self._start(m.group(1).strip(), m.end(), out)
            # Only text past what was already searched can hold a closing tag (long values stay O(n)).
            end = self._buf.find(fmt.function_end, max(self._pos, self._searched - len(fmt.function_end)))
            self._members(end if end != -1 else len(self._buf), out)
            self._searched = len(self._buf)
            if end == -1:
                return out
            out.append(self._closing())
            self._name, self._pos = None, end + len(fmt.function_end)

    def _start(self, name: str, at: int, out: list[ToolCallDelta]) -> None:
        self._name, self._params, self._pos = name, 0, at
        self.emitted += 1
        out.append(ToolCallDelta(self._index(), new_call_id(), name, ""))

    def _members(self, limit: int, out: list[ToolCallDelta]) -> None:
        fmt = self._fmt
        while True:
            close = self._buf.find(fmt.param_end, max(self._pos, self._searched - len(fmt.param_end)), limit)
            if close == -1:
                return
            opening = self._buf.find(fmt.param_start, self._pos, close)
            m = fmt.param.match(self._buf, opening, close + len(fmt.param_end)) if opening != -1 else None
            if m is None:  # stray closing tag: skip it
                self._pos = close + len(fmt.param_end)
                continue
            flag = m.groupdict().get("string")
            out.append(ToolCallDelta(self._index(), arguments=self._member(
                m.group("key").strip(), m.group("value"), None if flag is None else flag == "true")))
            self._pos = m.end()

    def _member(self, key: str, raw: str, as_string: bool | None) -> str:
        value = typed_value(raw, self._types.get(self._name or "", {}).get(key), as_string)
        sep = "{" if self._params == 0 else ", "
        self._params += 1
        return sep + json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False)

    def _closing(self) -> ToolCallDelta:
        return ToolCallDelta(self._index(), arguments="}" if self._params else "{}")

    def close(self) -> list[ToolCallDelta]:
        if self._name is not None:  # truncated: close what was sent so arguments stay JSON
            self._name = None
            return [self._closing()]
        return []


QWEN3_CODER = TagFormat(re.compile(r"<function=([^>\n]+)>"), "</function>",
                        re.compile(r"<parameter=(?P<key>[^>\n]+)>\n?(?P<value>.*?)\n?</parameter>", re.DOTALL),
                        "</parameter>", "<parameter=")
MINIMAX_M2 = TagFormat(re.compile(r'<invoke name="?([^">\n]+)"?\s*>'), "</invoke>",
                       re.compile(r'<parameter name="?(?P<key>[^">\n]+)"?\s*>\n?(?P<value>.*?)\n?</parameter>',
                                  re.DOTALL),
                       "</parameter>", "<parameter")
DSML = TagFormat(re.compile(r'<｜DSML｜invoke name="([^"]+)"\s*>'), "</｜DSML｜invoke>",
                 re.compile(r'<｜DSML｜parameter name="(?P<key>[^"]+)"(?:\s+string="(?P<string>true|false)")?\s*>'
                            r"(?P<value>.*?)</｜DSML｜parameter>", re.DOTALL),
                 "</｜DSML｜parameter>", "<｜DSML｜parameter")


def _dsml(block: str) -> CallLayout:
    return CallLayout(f"<｜DSML｜{block}>\n", f"</｜DSML｜{block}>", head='<｜DSML｜invoke name="{name}">\n',
                      tail="</｜DSML｜invoke>\n", between="", style="deepseek_xml")


def _tagged(names: tuple[str, ...], start: str, end: str, fmt: TagFormat, specials: bool, layout: CallLayout) -> type:
    """A format whose block (between `start` and `end`) holds `fmt`'s functions, written as `layout` says."""

    class Parser(MarkedToolParser):
        start_markers = (start,)
        end_marker = end
        needs_special_tokens = specials
        call_layout = layout

        def make_inner(self, marker: str, first_index: int):
            return TaggedCalls(first_index, fmt, schema_types(self.tools))

    Parser.__name__ = Parser.__qualname__ = "".join(n.title() for n in names[0].split("_")) + "Parser"
    return register_tool_parser(*names)(Parser)


# Layouts as the models' chat templates (DeepSeek's encoding scripts) write calls; parameters in xgrammar's
# XML styles, typed by each tool's schema as `typed_value` reads them back.
_tagged(("qwen3_coder", "nemotron_nano"), "<tool_call>", "</tool_call>", QWEN3_CODER, specials=False,
        layout=CallLayout("", "", head="<tool_call>\n<function={name}>\n", tail="</function>\n</tool_call>",
                          style="qwen_xml"))
_tagged(("minimax_m2",), "<minimax:tool_call>", "</minimax:tool_call>", MINIMAX_M2, specials=True,
        layout=CallLayout("<minimax:tool_call>\n", "</minimax:tool_call>", head='<invoke name="{name}">\n',
                          tail="</invoke>\n", between="", style="minimax_xml"))
_tagged(("deepseek_v3_2",), "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", DSML, specials=True,
        layout=_dsml("function_calls"))
_tagged(("deepseek_v4",), "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", DSML, specials=True,
        layout=_dsml("tool_calls"))


_GLM_NAME = re.compile(r"\s*([^<\s][^<\n]*?)\s*(?=<arg_key>|\n)")
_GLM_PARAM = TagFormat(re.compile(r"(?!)"), "\0", re.compile(
    r"<arg_key>(?P<key>.*?)</arg_key>\s*<arg_value>(?P<value>.*?)</arg_value>", re.DOTALL),
    "</arg_value>", "<arg_key>")


class _GlmCall(TaggedCalls):
    """One call per `<tool_call>` block: its name is the block's first line (or what precedes the
    first `<arg_key>`), and the block's end closes it."""

    def __init__(self, first_index: int, types: dict[str, dict[str, str]]) -> None:
        super().__init__(first_index, _GLM_PARAM, types)

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._buf += text
        out: list[ToolCallDelta] = []
        if self._name is None and not self.emitted:
            m = _GLM_NAME.match(self._buf)
            if not m:
                return out
            self._start(m.group(1), m.end(), out)
        if self._name is not None:
            self._members(len(self._buf), out)
            self._searched = len(self._buf)
        return out

    def close(self) -> list[ToolCallDelta]:
        if not self.emitted:  # a call with no arguments: the whole block is its name
            name = self._buf.strip()
            if not name or "<" in name:
                self.failed = True
                return []
            out: list[ToolCallDelta] = []
            self._start(name, len(self._buf), out)
            self._name = None
            return out + [self._closing()]
        return super().close()


@register_tool_parser("glm45")
class GlmParser(MarkedToolParser):
    start_markers = ("<tool_call>",)
    end_marker = "</tool_call>"
    needs_special_tokens = True
    # GLM-4.5 writes a newline after the name and after each tag (`glm_xml` admits that whitespace), and
    # between calls; GLM-4.7 none (`Glm47Parser`).
    call_layout = CallLayout("", "", head="<tool_call>{name}", tail="</tool_call>", style="glm_xml")

    def make_inner(self, marker: str, first_index: int):
        return _GlmCall(first_index, schema_types(self.tools))


@register_tool_parser("glm47")
class Glm47Parser(GlmParser):
    """GLM-4.7: GLM-4.5's parser; only the layout a grammar asks for differs (no newline between calls)."""

    call_layout = CallLayout("", "", head="<tool_call>{name}", tail="</tool_call>", between="", style="glm_xml")

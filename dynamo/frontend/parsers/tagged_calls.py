"""Tool-call formats whose arguments are tagged parameters, not JSON: each parameter is sent as a
JSON member once its closing tag arrives, typed by the tool's JSON schema as xgrammar's XML styles
write it (what a structural tag holds the model to): a string, or a `const`/`enum` of strings, is the
value's raw text; every other kind (numbers, booleans, null, arrays, objects; `anyOf`, a list of types,
a `$ref` resolved in the parameters' own schema) is JSON, decoded (`typed_value`), and a parameter whose
schema says nothing is text or a JSON array or object. A value that does not decode, and a parameter the
schema lacks, stay text. The name is sent as soon as it is complete.

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
from dynamo.frontend.parsers.json_scan import strict_loads
from dynamo.frontend.parsers.marked import MarkedToolParser


# The JSON types a parameter's value may take: a value read as text where the only one is a string.
TEXT = frozenset(("string",))
# A parameter whose schema says nothing: xgrammar's XML styles write raw text, or a JSON array or object.
_UNSAID = frozenset(("string", "array", "object"))


def parameter_types(tools: list[dict] | None) -> dict[str, dict[str, frozenset[str]]]:
    """{function name: {parameter: the JSON types its value may take}} from the request's tools (a
    parameter not listed here is read as text)."""
    types: dict[str, dict[str, frozenset[str]]] = {}
    for tool in tools or []:
        fn = tool.get("function") or {}
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        if isinstance(props, dict):
            types[fn.get("name", "")] = {k: value_types(v, params) or _UNSAID for k, v in props.items()}
    return types


def value_types(schema, root: dict, refs: frozenset[str] = frozenset()) -> frozenset[str] | None:
    """The JSON types `schema` admits, its keywords read in xgrammar's order (`$ref`, `const`, `enum`,
    `anyOf`/`oneOf`, `allOf`, `type`, then `properties` or `items`); None where it says nothing.
    `$ref`s resolve in `root`, the tool's parameters (where a tool's `$defs` are)."""
    if not isinstance(schema, dict):
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):  # a ref met again along its own chain says nothing more
        return None if ref in refs else value_types(_pointer(root, ref), root, refs | {ref})
    if "const" in schema:
        return frozenset((_json_type(schema["const"]),))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return frozenset(map(_json_type, schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            each = [value_types(s, root, refs) for s in schema[key]]
            return None if not each or None in each else frozenset().union(*each)
    if isinstance(schema.get("allOf"), list):  # what every part admits (a part that says nothing admits all)
        each = [t for t in (value_types(s, root, refs) for s in schema["allOf"]) if t is not None]
        return (frozenset.intersection(*each) or None) if each else None
    declared = schema.get("type")
    if isinstance(declared, str):
        declared = [declared]
    if isinstance(declared, list):
        return frozenset(t for t in declared if isinstance(t, str)) or None
    if any(k in schema for k in ("properties", "additionalProperties", "unevaluatedProperties")):
        return frozenset(("object",))
    if any(k in schema for k in ("items", "prefixItems", "unevaluatedItems")):
        return frozenset(("array",))
    return None


def _pointer(root: dict, ref: str):
    """The schema a local `$ref` (`#`, `#/$defs/Name`, `#/properties/x`) points at in `root`; None if none."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "string")


def typed_value(raw: str, types: frozenset[str], as_string: bool | None = None):
    """A parameter's value: its text where the format's own flag says string (DSML's `string="true"`), or
    where it has no flag and `types` are a string alone. Else the JSON it holds (null included; text where
    it holds none), with no flag kept as text where that JSON is a string (xgrammar writes no string as
    JSON here: a quoted value is text, quotes and all) or where the schema allows a string but not that
    JSON's type (the grammar took it as text: `5` for an `anyOf` of a string and an array)."""
    if as_string or (as_string is None and types == TEXT):
        return raw
    try:
        value = strict_loads(raw.strip())
        json.dumps(value, allow_nan=False)  # 1e999 decodes to infinity, which JSON cannot carry on
    except (ValueError, RecursionError):
        return raw
    if as_string is False:
        return value
    kind = _json_type(value)
    fits = kind in types or (kind == "integer" and "number" in types)
    return raw if kind == "string" or ("string" in types and not fits) else value


@dataclass(frozen=True)
class TagFormat:
    function: re.Pattern  # a function's opening tag; group 1 is its name
    function_end: str
    param: re.Pattern  # one whole parameter: groups key, value, and optionally `string`
    param_end: str
    param_start: str  # text that opens a parameter (to tell a complete one from a stray closing tag)


class TaggedCalls:
    """Inner stream for formats of `TagFormat`: any number of functions per block."""

    def __init__(self, first_index: int, fmt: TagFormat, types: dict[str, dict[str, frozenset[str]]]) -> None:
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
        value = typed_value(raw, self._types.get(self._name or "", {}).get(key, TEXT), as_string)
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
            return TaggedCalls(first_index, fmt, parameter_types(self.tools))

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

    def __init__(self, first_index: int, types: dict[str, dict[str, frozenset[str]]]) -> None:
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
        return _GlmCall(first_index, parameter_types(self.tools))


@register_tool_parser("glm47")
class Glm47Parser(GlmParser):
    """GLM-4.7: GLM-4.5's parser; only the layout a grammar asks for differs (no newline between calls)."""

    call_layout = CallLayout("", "", head="<tool_call>{name}", tail="</tool_call>", between="", style="glm_xml")

"""MiniMax M3's tool calls (`minimax_m3`): XML-like tags, each behind the namespace token `]<]minimax[>[`
(NS below), where a parameter's tag name is the parameter's own name and a value may nest further tags:

    NS<tool_call>
    NS<invoke name="get_weather">NS<city>Paris NS</city>NS<days>3NS</days>NS</invoke>
    NS</tool_call>

One block holds any number of invokes, each one call (an invoke with no name is skipped). Values are
unescaped (`&lt; &gt; &amp; &quot; &#x27; &#39;`) and typed by the tool's JSON schema; `null` is null
whatever the schema, and with no schema a value stays text. A repeated parameter collects its values in
an array. Nested tags become an object's members (loose text beside them under `$text`), or an array's
elements where the schema says array and the children are `<item>`s.

A block is converted whole when its end marker arrives (a value's type may depend on tags still to
come); a block with no named invoke, or cut off before its end, stays in the answer as the model wrote it.
"""

from __future__ import annotations

import json
import math
import re

from dynamo.frontend.parsers.json_scan import strict_loads
from dynamo.frontend.parsers.base import ToolCallDelta, new_call_id, register_tool_parser
from dynamo.frontend.parsers.marked import Inner, MarkedToolParser

NS = "]<]minimax[>["
TAG = NS + "<"
INVOKE_END = NS + "</invoke>"
_INVOKE = re.compile(re.escape(NS) + r"<invoke(?=[\s>])([^>]*)>")
_NAME = re.compile(r"""(?:^|\s)name\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#x27|#39);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "#x27": "'", "#39": "'"}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NO = object()  # a converter's "not this type"


def unescape(text: str) -> str:
    # One pass, so `&amp;lt;` is the text `&lt;`, not `<`.
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def parse_block(block: str, schemas: dict[str, dict]) -> list[tuple[str, dict]]:
    """(name, arguments) of each named invoke in a block's text between its markers."""
    calls: list[tuple[str, dict]] = []
    m = _INVOKE.search(block)
    while m is not None:
        following = _INVOKE.search(block, m.end())
        end = block.find(INVOKE_END, m.end())
        # An invoke left open ends where the next one starts (or the block ends): lenient, not lost.
        stop = min(i for i in (end, following.start() if following else -1, len(block)) if i != -1)
        name = _invoke_name(m.group(1))
        if name:
            children, _ = elements(block[m.end():stop])
            calls.append((name, members(children, schemas.get(name))))
        m = following
    return calls


def _invoke_name(attributes: str) -> str:
    m = _NAME.search(attributes)
    return next((g for g in m.groups() if g is not None), "").strip() if m else ""


def elements(text: str) -> tuple[list[tuple[str, str]], str]:
    """The tags at the top level of `text`, as (tag name, raw inner text), and the text around them.
    A tag with no closing tag (or a stray closing tag) is dropped; its content stays loose text."""
    children: list[tuple[str, str]] = []
    loose: list[str] = []
    at = 0
    while (i := text.find(TAG, at)) != -1:
        loose.append(text[at:i])
        gt = text.find(">", i + len(TAG))
        if gt == -1:
            at = i
            break
        tag = text[i + len(TAG):gt]
        end = _closing(text, tag, gt + 1) if tag and not tag.startswith("/") else None
        if end is None:
            at = gt + 1
            continue
        if not any(c.isspace() for c in tag):  # a name with whitespace is not a parameter
            children.append((tag, text[gt + 1:end]))
        at = end + len(TAG) + len(tag) + 2
    loose.append(text[at:])
    return children, "".join(loose)


def _closing(text: str, tag: str, at: int) -> int | None:
    """Where the closing tag of `tag` opened before `at` starts, counting nested tags of the same name
    (an item of an array of arrays); None when it never closes."""
    opening, closing = f"{TAG}{tag}>", f"{TAG}/{tag}>"
    depth = 1
    while (j := text.find(closing, at)) != -1:
        k = text.find(opening, at, j)
        if k != -1:
            depth, at = depth + 1, k + len(opening)
            continue
        depth -= 1
        if depth == 0:
            return j
        at = j + len(closing)
    return None


def members(children: list[tuple[str, str]], schema: dict | None) -> dict:
    """An object of tagged values; a repeated name collects its values in an array."""
    out: dict = {}
    repeated: set[str] = set()
    for tag, raw in children:
        value = convert(raw, member_schema(schema, tag))
        if tag not in out:
            out[tag] = value
        elif tag in repeated:
            out[tag].append(value)
        else:  # the first repeat: even a value that is itself a list becomes the array's first element
            out[tag] = [out[tag], value]
            repeated.add(tag)
    return out


def convert(raw: str, schema: dict | None):
    """One value: nested tags, else a scalar typed by `schema`."""
    if TAG in raw:
        children, loose = elements(raw)
        if children:
            return _nested(children, loose, schema)
    text = unescape(raw)
    if text.strip().lower() == "null":
        return None
    return typed(text, schema)


def _nested(children: list[tuple[str, str]], loose: str, schema: dict | None):
    if children[0][0] == "item" and "array" in kinds(schema):
        items = items_schema(schema)
        return [convert(raw, items) for tag, raw in children if tag == "item"]
    out = members(children, schema)
    if loose.strip():
        out["$text"] = unescape(loose.strip())
    return out


def typed(text: str, schema: dict | None):
    """Text as the schema's first type it parses as; text itself when the schema allows a string
    (or says nothing), or when nothing parses."""
    allowed = kinds(schema)
    if not allowed or "string" in allowed:
        return text
    stripped = text.strip()
    for kind in allowed:
        convert_to = _CONVERTERS.get(kind)
        value = convert_to(stripped) if convert_to else _NO
        if value is not _NO:
            return value
    return text


def _integer(text: str):
    return int(text) if _INT.fullmatch(text) else _NO


def _number(text: str):
    if _INT.fullmatch(text):
        return int(text)
    value = float(text) if _FLOAT.fullmatch(text) else math.inf
    return value if math.isfinite(value) else _NO  # 1e999 overflows: JSON has no infinity


def _boolean(text: str):
    return {"true": True, "1": True, "false": False, "0": False}.get(text.lower(), _NO)


def _json(empty):
    def parse(text: str):
        if not text:
            return empty()
        try:
            return strict_loads(text)
        except ValueError:
            return _NO
    return parse


_CONVERTERS = {"integer": _integer, "number": _number, "boolean": _boolean, "object": _json(dict),
               "array": _json(list)}


def branches(schema) -> list[dict]:
    """A schema and its `anyOf`/`oneOf` alternatives, at any depth."""
    if not isinstance(schema, dict):
        return []
    out = [schema]
    for key in ("anyOf", "oneOf"):
        alternatives = schema.get(key)
        for alternative in alternatives if isinstance(alternatives, list) else []:
            out.extend(branches(alternative))
    return out


def kinds(schema) -> list[str]:
    """The JSON types a schema allows, in its order. An `enum` with no type is text; a schema with no
    type but with `properties` or `items` is an object or an array."""
    out: list[str] = []
    for branch in branches(schema):
        declared = branch.get("type")
        names = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
        if not names:
            names = (["string"] if "enum" in branch else ["object"] if "properties" in branch
                     else ["array"] if "items" in branch else [])
        out.extend(n for n in names if isinstance(n, str) and n not in out)
    return out


def member_schema(schema, key: str) -> dict | None:
    every = branches(schema)
    for branch in every:
        props = branch.get("properties")
        found = props.get(key) if isinstance(props, dict) else None  # a client's schema: any shape
        if isinstance(found, dict):
            return found
    return next((b["additionalProperties"] for b in every if isinstance(b.get("additionalProperties"), dict)),
                None)


def items_schema(schema) -> dict | None:
    return next((b["items"] for b in branches(schema) if isinstance(b.get("items"), dict)), None)


def parameter_schemas(tools: list[dict] | None) -> dict[str, dict]:
    """{function name: its parameters' JSON schema} from the request's tools."""
    out: dict[str, dict] = {}
    for tool in tools or []:
        fn = tool.get("function") or {}
        if isinstance(fn.get("parameters"), dict):
            out[fn.get("name", "")] = fn["parameters"]
    return out


class _MinimaxM3Block:
    """One block, held until its end marker and then sent as its calls (or none)."""

    def __init__(self, first_index: int, schemas: dict[str, dict]) -> None:
        self.first = first_index
        self.emitted = 0
        self.failed = False
        self.cut_off = False
        self._schemas = schemas
        self._text = ""
        self._opens_with_invoke = False

    def feed(self, text: str) -> list[ToolCallDelta]:
        self._text += text
        if not self._opens_with_invoke:  # decided once, so a long block is not rescanned per token
            head = self._text.lstrip()
            self._opens_with_invoke = head.startswith(TAG + "invoke")
            self.failed = not (self._opens_with_invoke or (TAG + "invoke").startswith(head))
        return []

    def close(self) -> list[ToolCallDelta]:
        if self.cut_off:
            return []
        calls = parse_block(self._text, self._schemas)
        self.emitted = len(calls)
        return [ToolCallDelta(self.first + i, new_call_id(), name, json.dumps(arguments, ensure_ascii=False))
                for i, (name, arguments) in enumerate(calls)]


@register_tool_parser("minimax_m3")
class MinimaxM3Parser(MarkedToolParser):
    start_markers = (NS + "<tool_call>",)
    end_marker = NS + "</tool_call>"
    needs_special_tokens = True

    def make_inner(self, marker: str, first_index: int) -> Inner:
        return _MinimaxM3Block(first_index, parameter_schemas(self.tools))

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        if isinstance(self._inner, _MinimaxM3Block):
            # No end marker: the calls may be incomplete, so none is sent and the block stays text.
            self._inner.cut_off = True
        return super().finish()

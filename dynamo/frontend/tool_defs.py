"""Several tools' parameter schemas placed inside one schema (tool_choice required's list of calls) with
every local `$ref` still resolving: each tool's `$defs` (and draft-07 `definitions`) move to the root's
`$defs`, where a `#/$defs/X` written for the tool's own root finds them (xgrammar and vLLM resolve refs
from the root only), and any other local ref is re-pointed to where the tool's schema now sits.

Two tools that define the same name alike share it. Where a tool defines a name that another tool
already defined differently, all of that tool's definitions are renamed (`tool.Name`) and its refs
rewritten to match, so each keeps its own: pydantic names every nested model after its class, so two
tools each with their own `Item` is an ordinary request (vLLM refuses it with a 400). The client's
schemas are copied, never changed.
"""

from __future__ import annotations

from typing import Any, Callable

from dynamo.frontend.errors import bad_request, nested_too_deeply

DEF_KEYS = ("$defs", "definitions")
# Keywords whose value maps names to subschemas, and those whose value is data, never a schema.
_NAMED_SCHEMAS = frozenset(("properties", "patternProperties", "dependentSchemas", *DEF_KEYS))
_DATA = frozenset(("const", "enum", "default", "examples"))

DefKey = tuple[str, str]  # (the keyword it was under, its name)


class _Clash(Exception):
    """A tool's definitions cannot keep their names at the root."""


def hoist_defs(located: list[tuple[str, dict, str]]) -> tuple[list[dict], dict[str, Any]]:
    """`located`: (tool name, parameters schema, the JSON pointer where that schema will sit). Returns each
    schema without its root definitions and with its refs rewritten, and the root's `$defs`."""
    root: dict[str, Any] = {}
    out = []
    try:
        for tool, params, where in located:
            local, params = _split(tool, params)
            try:
                defs, placed = _place(local, params, {key: key[1] for key in local}, where, root)
            except _Clash:
                taken = set(root)
                names = {key: _fresh(f"{tool}.{key[1]}", taken) for key in local}
                defs, placed = _place(local, params, names, where, root)
            root.update(defs)
            out.append(placed)
    except RecursionError:
        raise nested_too_deeply() from None
    return out, root


def _split(tool: str, params: dict) -> tuple[dict[DefKey, Any], dict]:
    """(the root definitions of a tool's parameters, the parameters without them)."""
    local: dict[DefKey, Any] = {}
    for key in DEF_KEYS:
        defs = params.get(key)
        if defs is None:
            continue
        if not isinstance(defs, dict):
            raise bad_request(f"`{key}` in the parameters of tool {tool!r} must be an object", "tools")
        local.update({(key, name): schema for name, schema in defs.items()})
    return local, {k: v for k, v in params.items() if k not in DEF_KEYS}


def _place(local: dict[DefKey, Any], params: dict, names: dict[DefKey, str], where: str,
           root: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Copies of a tool's definitions under `names` and of its parameters, refs rewritten; _Clash where a
    name would stand for two different schemas."""
    fix = _ref_fixer(names, where)
    defs: dict[str, Any] = {}
    for key, schema in local.items():
        name, placed = names[key], _rewritten(schema, fix)
        if name in defs and defs[name] != placed or name in root and root[name] != placed:
            raise _Clash(name)
        defs[name] = placed
    return defs, _rewritten(params, fix)


def _ref_fixer(names: dict[DefKey, str], where: str) -> Callable[[str], str]:
    def fix(ref: str) -> str:
        if not ref.startswith("#") or ref[1:2] not in ("", "/"):
            return ref  # another document, or an anchor: not a pointer into this schema
        parts = ref[1:].split("/")
        if len(parts) >= 3 and parts[1] in DEF_KEYS:
            new = names.get((parts[1], _unescape(parts[2])))
            # A definition the tool does not have is left as written (it may be one the root has).
            return ref if new is None else "#/" + "/".join(["$defs", _escape(new), *parts[3:]])
        return "#" + where + ref[1:]
    return fix


def _rewritten(node: Any, fix: Callable[[str], str]) -> Any:
    """A copy of the schema `node` with every `$ref` passed through `fix` (data such as `enum` untouched)."""
    if isinstance(node, list):
        return [_rewritten(v, fix) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str):
            out[k] = fix(v)
        elif k in _NAMED_SCHEMAS and isinstance(v, dict):
            out[k] = {name: _rewritten(s, fix) for name, s in v.items()}
        else:
            out[k] = v if k in _DATA else _rewritten(v, fix)
    return out


def _fresh(name: str, taken: set[str]) -> str:
    n, out = 2, name
    while out in taken:
        out, n = f"{name}_{n}", n + 1
    taken.add(out)
    return out


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")

"""Several tools' parameter schemas placed inside one schema (tool_choice required's list of calls) with
every local `$ref` still resolving: each tool's `$defs` (and draft-07 `definitions`) move to the root's
`$defs`, where a `#/$defs/X` written for the tool's own root finds them (xgrammar and vLLM resolve refs
from the root only). A tool with any other local ref (`#` of a recursive schema, `#/properties/leaf`) has
its whole schema moved there too, under its own name (`$defs/<tool>`), its refs re-pointed below it and
its place in the list a `{"$ref": "#/$defs/<tool>"}`: xgrammar cannot follow a pointer through a list's
index (`#/items/anyOf/0/...`), so no ref written here goes through one.

Two tools that define the same name alike share it. Where a tool defines a name that another tool
already defined differently, all of that tool's definitions are renamed (`tool.Name`) and its refs
rewritten to match, so each keeps its own: pydantic names every nested model after its class, so two
tools each with their own `Item` is an ordinary request (vLLM refuses it with a 400). A moved schema
takes a fresh name where its tool's name is taken. A `#/$defs/X` whose tool defines no X is a 400 (it
would otherwise find another tool's X). The client's schemas are copied, never changed.
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


def hoist_defs(tools: list[tuple[str, dict]]) -> tuple[list[dict], dict[str, Any]]:
    """`tools`: (tool name, parameters schema), in the request's order. Returns what stands in each
    tool's place (its schema without its root definitions, refs rewritten, or a ref to where that
    schema moved) and the root's `$defs`."""
    root: dict[str, Any] = {}
    out = []
    try:
        for i, (tool, params) in enumerate(tools):
            local, params = _split(tool, params)
            try:
                defs, placed = _place(i, tool, local, params, {key: key[1] for key in local}, root)
            except _Clash:
                taken = set(root)
                names = {key: _fresh(f"{tool}.{key[1]}", taken) for key in local}
                defs, placed = _place(i, tool, local, params, names, root)
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


def _place(i: int, tool: str, local: dict[DefKey, Any], params: dict, names: dict[DefKey, str],
           root: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Copies of tool `i`'s definitions under `names` and of its parameters (or, where a ref points into
    them, a ref to them, moved among the definitions), refs rewritten; _Clash where a name would stand
    for two different schemas."""
    fix = _RefFixer(i, names, _fresh(tool, set(root) | set(names.values())))
    defs: dict[str, Any] = {}
    for key, schema in local.items():
        name, placed = names[key], _rewritten(schema, fix)
        if name in defs and defs[name] != placed or name in root and root[name] != placed:
            raise _Clash(name)
        defs[name] = placed
    params = _rewritten(params, fix)
    if not fix.moved:
        return defs, params
    defs[fix.home] = params
    return defs, {"$ref": "#/$defs/" + _escape(fix.home)}


class _RefFixer:
    """Rewrites tool `i`'s local refs: into its definitions (`names`), or into its own schema, which then
    moves to the root's `$defs` under `home` (`moved`)."""

    def __init__(self, i: int, names: dict[DefKey, str], home: str) -> None:
        self._i, self._names, self.home, self.moved = i, names, home, False

    def __call__(self, ref: str) -> str:
        if not ref.startswith("#") or ref[1:2] not in ("", "/"):
            return ref  # another document, or an anchor: not a pointer into this schema
        parts = ref[1:].split("/")
        if len(parts) > 1 and parts[1] in DEF_KEYS:
            new = self._names.get((parts[1], _unescape(parts[2]))) if len(parts) > 2 else None
            if new is None:  # left as written it could find another tool's definition of that name
                raise bad_request(f"tools[{self._i}]: `$ref` {ref!r} names no definition of the function's "
                                  "parameters", f"tools[{self._i}].function.parameters")
            return "#/" + "/".join(["$defs", _escape(new), *parts[3:]])
        self.moved = True
        return "#/$defs/" + _escape(self.home) + ref[1:]


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

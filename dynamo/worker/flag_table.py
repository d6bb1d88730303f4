"""Static tables of an engine's own CLI flags, for checking manifests where the engine is
not installed (`python -m dynamo.deploy validate` in the main venv).

`classify(parser)` reads a real argparse parser into four kinds of option; `write_table`
renders them as a Python module; `add_static_flags` rebuilds a permissive parser from
such a table (same spellings and arities, values kept as strings).
"""

from __future__ import annotations

import argparse

KINDS = (("BOOL", "--flag / --no-flag (argparse.BooleanOptionalAction)"), ("SWITCH", "--flag (no value)"),
         ("MULTI_VALUE", "--flag VALUE [VALUE ...]"), ("VALUE", "--flag VALUE"))


def classify(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> dict[str, list[tuple[str, ...]]]:
    groups: dict[str, list[tuple[str, ...]]] = {kind: [] for kind, _ in KINDS}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        longs = [s for s in action.option_strings if s.startswith("--") and not s.startswith("--no-")]
        names = tuple(longs + [s for s in action.option_strings if not s.startswith("--")])
        if not names or set(names) & skip:
            continue
        kind = ("BOOL" if isinstance(action, argparse.BooleanOptionalAction) else
                "SWITCH" if action.nargs == 0 else
                "MULTI_VALUE" if action.nargs in ("+", "*") or isinstance(action.nargs, int) else "VALUE")
        groups[kind].append(names)
    return groups


def write_table(path: str, version_name: str, version: str, groups: dict[str, list[tuple[str, ...]]]) -> None:
    """Rewrite the generated part of `path` (everything from `version_name` on)."""
    with open(path, encoding="utf-8") as fh:
        header = fh.read().split(version_name)[0]
    body = [f'{version_name} = "{version}"\n']
    for kind, comment in KINDS:
        rows = "\n".join(f"    {names!r}," for names in groups[kind])
        body.append(f"# {comment}\n{kind}_FLAGS: tuple[tuple[str, ...], ...] = (\n{rows}\n)\n")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header + "\n".join(body))


def add_static_flags(group, table) -> None:
    for names in table.BOOL_FLAGS:
        group.add_argument(*names, action=argparse.BooleanOptionalAction, default=None)
    for names in table.SWITCH_FLAGS:
        group.add_argument(*names, action="store_true", default=None)
    for names in table.MULTI_VALUE_FLAGS:
        group.add_argument(*names, nargs="*", default=None)
    for names in table.VALUE_FLAGS:
        group.add_argument(*names, default=None)

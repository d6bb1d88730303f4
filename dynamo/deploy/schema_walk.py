"""Checking a parsed YAML document against a typed manifest model (msgspec Structs) field by field,
so that every problem is reported with its path (`spec.services.Frontend.replicas: expected int,
got str`) rather than only the first, as a decode would. Both served DGD versions' checks use it."""

from __future__ import annotations

import typing
from typing import Any, Literal, Union

import msgspec

_JSON_NAMES = {str: "str", int: "int", float: "float", bool: "bool", type(None): "null", dict: "object",
               list: "list"}


def _kind(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return _JSON_NAMES[origin]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "object"
    return _JSON_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def join_path(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _check_value(value: Any, tp: Any, path: str, errors: list[tuple[str, str]]) -> None:
    origin = typing.get_origin(tp)
    if tp is Any:
        return
    if origin is Union:
        members = typing.get_args(tp)
        if value is None and type(None) in members:
            return
        real = [m for m in members if m is not type(None)]
        structs = [m for m in real if isinstance(m, type) and issubclass(m, msgspec.Struct)]
        if len(real) == 1 or (structs and isinstance(value, dict)):
            _check_value(value, structs[0] if structs else real[0], path, errors)
            return
        for member in real:
            probe: list[tuple[str, str]] = []
            _check_value(value, member, path, probe)
            if not probe:
                return
        errors.append((path, f"expected {_type_name(tp)}, got {_kind(value)}"))
    elif origin is Literal:
        if value not in typing.get_args(tp):
            errors.append((path, f"expected {_type_name(tp)}, got {value!r}"))
    elif isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        check_struct(value, tp, path, errors)
    elif origin is list:
        if not isinstance(value, list):
            errors.append((path, f"expected list, got {_kind(value)}"))
            return
        (item,) = typing.get_args(tp) or (Any,)
        for i, entry in enumerate(value):
            _check_value(entry, item, join_path(path, i), errors)
    elif origin is dict:
        if not isinstance(value, dict):
            errors.append((path, f"expected object, got {_kind(value)}"))
            return
        _, item = typing.get_args(tp) or (str, Any)
        for key, entry in value.items():
            _check_value(entry, item, join_path(path, key), errors)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append((path, f"expected float, got {_kind(value)}"))
    elif type(value) is not tp:  # bool is not int here: YAML `replicas: true` is a mistake
        errors.append((path, f"expected {_type_name(tp)}, got {_kind(value)}"))


def check_struct(value: Any, cls: type[msgspec.Struct], path: str, errors: list[tuple[str, str]]) -> None:
    if not isinstance(value, dict):
        errors.append((path, f"expected object, got {_kind(value)}"))
        return
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in value:
        if key not in fields:
            errors.append((join_path(path, key), "unknown field"))
    for name, field in fields.items():
        if name in value:
            _check_value(value[name], field.type, join_path(path, name), errors)
        elif field.required:
            errors.append((join_path(path, name), "required field missing"))

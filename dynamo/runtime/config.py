"""Typed component configuration: one dataclass per component is the single source
of every setting; its CLI flags and their `DYN_*` environment twins are generated
from it, and the effective config can be dumped as JSON.

A field is declared with `setting(default, help, env=..., flag=..., choices=...)`.
Precedence: command line > environment > default (as in NVIDIA Dynamo).

`flag=False` keeps a setting env-only: NVIDIA Dynamo reads some variables (POD_IP,
DYN_TCP_RPC_HOST, ...) without a flag, and inventing flags would widen the CLI it
defines. `env=(primary, fallback, ...)` reads the first non-empty of several names, for
variables another tool injects under its own name (the operator's DYNAMO_PORT).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import typing
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    help: str = "",
    *,
    env: str | Sequence[str] | None | bool = None,
    flag: str | Sequence[str] | None | bool = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a config field. `env=None` derives `DYN_<NAME>`; `env=False` means no env twin;
    a sequence of names is read in order. `flag=None` derives `--<name>`; `flag=False` means
    no flag (env only). `secret=True` keeps the value out of dumps (`config_values`)."""
    meta = {"help": help, "env": env, "flag": flag, "choices": choices, "metavar": metavar, "secret": secret}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def env_names(field: dataclasses.Field) -> list[str]:
    """The variables that may set `field`, highest priority first (empty: no env twin)."""
    env = field.metadata.get("env")
    if env is False:
        return []
    if env is None or env is True:
        return ["DYN_" + field.name.upper()]
    return [env] if isinstance(env, str) else list(env)


def env_name(field: dataclasses.Field) -> str | None:
    names = env_names(field)
    return names[0] if names else None


def flag_names(field: dataclasses.Field) -> list[str]:
    """The field's CLI flags (empty for an env-only setting)."""
    flag = field.metadata.get("flag")
    if flag is False:
        return []
    if flag is None or flag is True:
        return ["--" + field.name.replace("_", "-")]
    return [flag] if isinstance(flag, str) else list(flag)


def _base_type(cls: type, field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        hint = args[0]
    return typing.get_origin(hint) or hint


def _convert(kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if kind is list:
        return [item for item in raw.replace(",", " ").split() if item]
    if kind is dict:
        return json.loads(raw)
    return kind(raw)


def _converter(kind: type) -> Callable[[str], Any]:
    """argparse's `type` for a field of `kind`, named after it: argparse's error quotes the name
    (`invalid float value: 'abc'`)."""
    def convert(raw: str) -> Any:
        return _convert(kind, raw)

    convert.__name__ = "JSON" if kind is dict else getattr(kind, "__name__", str(kind))
    return convert


def _default(field: dataclasses.Field) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of `cls`; defaults stay unset so env can fill them in."""
    for field in dataclasses.fields(cls):
        flags = flag_names(field)
        if not flags:
            continue
        kind = _base_type(cls, field)
        envs = env_names(field)
        help_text = field.metadata.get("help", "")
        default = _default(field)
        suffix = f" [env {', else '.join(envs)}]" if envs else ""
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": f"{help_text} (default: {default!r}){suffix}",
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is list:
            kwargs["nargs"] = "*"
        else:
            kwargs["type"] = _converter(kind)
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]
            if field.metadata.get("metavar"):
                kwargs["metavar"] = field.metadata["metavar"]
        parser.add_argument(*flags, **kwargs)


def from_namespace(cls: type[T], ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from parsed flags, filling unset fields from the environment, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if hasattr(ns, field.name):
            values[field.name] = getattr(ns, field.name)
            continue
        # An empty variable counts as unset: manifests often template `VAR: ""`.
        env = next((name for name in env_names(field) if environ.get(name) not in (None, "")), None)
        if env is not None:
            values[field.name] = _from_env(cls, field, env, environ[env])
    return cls(**values)


def _from_env(cls: type, field: dataclasses.Field, env: str, raw: str) -> Any:
    """Convert one variable's text, or exit with a message naming the variable."""
    try:
        value = _convert(_base_type(cls, field), raw)
    except (ValueError, json.JSONDecodeError) as exc:
        raise SystemExit(f"invalid value for {env}: {exc}") from None
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        raise SystemExit(f"invalid value for {env}: {value!r} (choose from {list(choices)})")
    return value


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    parser = build_parser(cls, prog=prog, description=description)
    ns = parser.parse_args(argv)
    config = from_namespace(cls, ns, environ)
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            parser.error(str(exc))
    return config


def build_parser(cls: type, *, prog: str | None = None, description: str | None = None,
                 add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description or (cls.__doc__ or "").strip(),
                                     add_help=add_help)
    add_arguments(parser, cls)
    return parser


REDACTED = "<redacted>"


def config_values(config: Any) -> dict[str, Any]:
    """Every field of a config dataclass by name, secret ones (set) replaced by `REDACTED`.
    A dump must say a secret was set without writing it where logs and support bundles go."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value not in (None, ""):
            value = REDACTED
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = config_values(value)
        elif isinstance(value, str) and "@" in value:
            value = redact_url_passwords(value)
        values[field.name] = value
    return values


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@,\s]*):[^@/,\s]*@")


def redact_url_passwords(text: str) -> str:
    """`nats://user:pw@host,etcd://u:pw@h2` -> `nats://user:<redacted>@host,...`: endpoint settings
    (NATS_SERVER, ETCD_ENDPOINTS) may carry credentials; the host stays readable."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)


def dump_config(config: Any) -> str:
    return json.dumps(config_values(config), indent=2, sort_keys=True, default=str)

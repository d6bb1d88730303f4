"""Flags of NVIDIA Dynamo's commands that one of ours does not act on: the boundary between a
manifest or script written for Dynamo's image and what our component does with it.

Such a flag must not stop the process (argparse's "unrecognized arguments" would crash-loop a
pod), and must not pass in silence either. Each component lists them in a `CompatFlags` table:
- accepted, with a warning the component logs at start naming the flag and why it has no effect
  here, when ignoring it weakens no guarantee the operator relies on;
- refused (`error`, argparse's exit 2) with the component's reason, when ignoring it would
  (security, or a different number of workers than asked for).
Their `DYN_*` twins are not read: an unknown variable is ignored like any other.

Every component also takes the runtime settings NVIDIA Dynamo gives flags on every command (TLS on
the request plane and to NATS, the canary's `--health-check-payload`: `RUNTIME_FLAGS`): such a flag sets its environment twin
(`export_runtime_flags`), which `RuntimeSettings`, the one reader of the environment, then reads.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, Sequence, TypeVar

from dynamo.runtime.config import build_parser, env_name, flag_names, from_namespace
from dynamo.runtime.config_dump import dynamo_version
from dynamo.runtime.settings import RuntimeSettings

T = TypeVar("T")
_DEST = "_dynamo_compat"
_ENV_DEST = "_dynamo_runtime_env"
# (flag, its environment twin, a switch, its help): runtime settings every component takes as flags.
RUNTIME_FLAGS = tuple((flag_names(f)[0], env_name(f), f.type in (bool, "bool"), f.metadata.get("help", ""))
                      for f in fields(RuntimeSettings)
                      if f.name.startswith(("tcp_tls_", "nats_tls_")) or f.name == "health_check_payload")

# (flag names: Dynamo's first, then its aliases) -> (takes a value, why it has no effect here).
# "Takes a value" is True (one), False (a negatable switch) or an argparse nargs ("*": a list).
Ignored = Mapping[tuple[str, ...], tuple[bool | str, str]]


@dataclass(frozen=True)
class CompatFlags:
    ignored: Ignored
    refused: Sequence[tuple[str, bool | str]] = ()  # (flag, takes a value)
    refused_why: str = ""
    refused_reasons: Mapping[str, str] | None = None  # flag -> its own reason (else `refused_why`)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Accept every listed flag (given ones are collected under one namespace attribute), and the
        runtime flags of `RUNTIME_FLAGS`."""
        _add_runtime_flags(parser)
        for names, (takes_value, _why) in self.ignored.items():
            _add(parser, names, takes_value)
        for name, takes_value in self.refused:
            _add(parser, (name,), takes_value)

    @staticmethod
    def given(namespace: argparse.Namespace) -> dict[str, Any]:
        """The listed flags the command line gave, with their values (None for a bool)."""
        return dict(getattr(namespace, _DEST, {}))

    def check(self, namespace: argparse.Namespace, error: Callable[[str], Any]) -> list[str]:
        """One warning per accepted flag given (the caller logs them once logging is set up);
        `error(message)` on a refused one. `--no-<flag>` turns off what is not done here anyway:
        no warning."""
        given = self.given(namespace)
        refused_names = {name for name, _ in self.refused}
        refused = sorted(f for f in given if _bare(f) in refused_names)
        if refused:
            reasons = self.refused_reasons or {}
            by_reason: dict[str, list[str]] = {}
            for flag in refused:
                by_reason.setdefault(reasons.get(_bare(flag), self.refused_why), []).append(flag)
            error("; ".join(f"{', '.join(flags)}: {why}" for why, flags in by_reason.items()))
        warnings = []
        for flag in given:
            if flag.startswith("--no-"):
                continue
            why = next(spec[1] for names, spec in self.ignored.items() if _bare(flag) in names)
            warnings.append(f"{flag} is accepted for compatibility with NVIDIA Dynamo and has no effect: {why}")
        return warnings


def compat_removed(namespace: argparse.Namespace) -> argparse.Namespace:
    """`namespace` without the listed flags' collections (for a parser that hands what it does not
    know to an engine's own argument class)."""
    return argparse.Namespace(**{k: v for k, v in vars(namespace).items() if k not in (_DEST, _ENV_DEST)})


def export_runtime_flags(namespace: argparse.Namespace, environ: dict[str, str] | None = None) -> None:
    """Set the environment twin of each runtime flag given (the flag wins over the variable)."""
    target = os.environ if environ is None else environ
    target.update(getattr(namespace, _ENV_DEST, {}))


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    for flag, env, switch, text in RUNTIME_FLAGS:
        if flag in parser._option_string_actions:
            continue
        if switch:
            parser.add_argument(flag, action=_SetEnv, const="true", nargs=0, dest=_ENV_DEST, env=env,
                                default=argparse.SUPPRESS, help=f"{text} [env {env}]".strip())
            parser.add_argument("--no-" + flag[2:], action=_SetEnv, const="false", nargs=0, dest=_ENV_DEST,
                                env=env, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, action=_SetEnv, dest=_ENV_DEST, env=env, metavar="VALUE",
                                default=argparse.SUPPRESS, help=f"{text} [env {env}]".strip())


class _SetEnv(argparse.Action):
    def __init__(self, *args, env: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env = env

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = dict(getattr(namespace, _ENV_DEST, {}))
        given[self.env] = self.const if self.const is not None else str(values)
        setattr(namespace, _ENV_DEST, given)


def _bare(flag: str) -> str:
    return "--" + flag[2:].removeprefix("no-") if flag.startswith("--") else flag


def _add(parser: argparse.ArgumentParser, names: tuple[str, ...], takes_value: bool | str) -> None:
    names = tuple(n for n in names if n not in parser._option_string_actions)  # the engine's own flag wins
    if not names:
        return
    kind = (dict(nargs=takes_value, metavar="VALUE") if isinstance(takes_value, str) else
            dict(nargs=None, metavar="VALUE") if takes_value else dict(nargs=0))
    parser.add_argument(*names, action=_Collect, dest=_DEST, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        **kind)
    if not takes_value:  # Dynamo's bools are negatable: --no-<name>
        negated = [f"--no-{n[2:]}" for n in names if n.startswith("--") and f"--no-{n[2:]}" not in
                   parser._option_string_actions]
        if negated:
            parser.add_argument(*negated, action=_Collect, dest=_DEST, nargs=0, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


class _Collect(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = dict(getattr(namespace, _DEST, {}))
        given[option_string] = values if values != [] else None
        setattr(namespace, _DEST, given)


def compat_parser(cls: type, flags: CompatFlags, prog: str | None = None, *,
                  add_help: bool = True) -> argparse.ArgumentParser:
    """The component's parser: its own settings, Dynamo's flags of `flags`, and `--version`.
    `add_help=False` leaves out `-h` and `--version`, which print and exit: for a first look at a
    command line that the full parse reads afterwards."""
    parser = build_parser(cls, prog=prog, add_help=add_help)
    flags.add_to(parser)
    if add_help:
        parser.add_argument("--version", action="version", version=f"dynamo {dynamo_version()}")
    return parser


def known_flags(cls: type, flags: CompatFlags) -> set[str]:
    """Every flag spelling the component's command line accepts (what a manifest may pass)."""
    return {name for action in compat_parser(cls, flags)._actions for name in action.option_strings}


def parse_with_compat(cls: type[T], flags: CompatFlags, argv: Sequence[str] | None = None, *, prog: str,
                      environ: Mapping[str, str] | None = None,
                      vet: Callable[[dict[str, Any], Callable[[str], Any]], None] | None = None) -> tuple[T, list[str]]:
    """A component's command line: its config `cls` (flag > env > default, validated), Dynamo's flags
    of `flags` accepted or refused, and `--version`. Returns (config, a warning per flag accepted
    without effect). `vet(given, error)` may refuse values of the accepted flags first."""
    parser = compat_parser(cls, flags, prog)
    namespace = parser.parse_args(argv)
    if vet is not None:
        vet(flags.given(namespace), parser.error)
    warnings = flags.check(namespace, parser.error)
    export_runtime_flags(namespace)
    config = from_namespace(cls, namespace, environ)
    try:
        config.validate()  # type: ignore[attr-defined]
    except ValueError as exc:
        parser.error(str(exc))
    return config, warnings

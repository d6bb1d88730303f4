"""Registry {module name -> argument parser factory} used to check manifest command lines
against the real CLIs of this image, and the check itself.

Factories are lazy `"module:attr"` paths so that checking a mocker graph never imports
vLLM. A module whose parser cannot be imported is reported as "flags not checked"; a
`dynamo.X` module this image does not contain at all is reported as not provided.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from dataclasses import dataclass
from typing import Callable

ParserFactory = Callable[[], argparse.ArgumentParser]


def _config_parser(path: str) -> ParserFactory:
    def factory() -> argparse.ArgumentParser:
        from dynamo.runtime.config import build_parser

        module, _, attr = path.partition(":")
        return build_parser(getattr(importlib.import_module(module), attr))

    return factory


_PARSERS: dict[str, str | ParserFactory] = {
    "dynamo.frontend": _config_parser("dynamo.frontend.config:FrontendConfig"),
    "dynamo.mocker": _config_parser("dynamo.mocker.args:MockerArgs"),
    "dynamo.vllm": "dynamo.vllm.args:build_parser",
    "dynamo.sglang": "dynamo.sglang.args:build_parser",
    "dynamo.trtllm": "dynamo.trtllm.args:build_parser",
    "dynamo.router": _config_parser("dynamo.router.service:RouterServiceConfig"),
    "dynamo.planner": "dynamo.planner.__main__:build_parser",
    "dynamo.global_planner": _config_parser("dynamo.global_planner.__main__:GlobalPlannerArgs"),
    "dynamo.global_router": _config_parser("dynamo.global_router.__main__:GlobalRouterArgs"),
}

# NVIDIA Dynamo's flags each command accepts without acting on them, or refuses with a reason
# (runtime/compat_args.py): a manifest may pass them; refused ones fail validation as they fail the pod.
_COMPAT: dict[str, str] = {
    "dynamo.frontend": "dynamo.frontend.compat_flags:FRONTEND_FLAGS",
    "dynamo.mocker": "dynamo.mocker.compat_flags:MOCKER_FLAGS",
    "dynamo.router": "dynamo.router.compat_flags:ROUTER_SERVICE_FLAGS",
    "dynamo.vllm": "dynamo.worker.compat_flags:VLLM_FLAGS",
    "dynamo.sglang": "dynamo.worker.compat_flags:SGLANG_FLAGS",
    "dynamo.trtllm": "dynamo.worker.compat_flags:TRTLLM_FLAGS",
}

# Arguments a command takes in a mode of its own before its parser sees them: {module: "module:function"},
# function(args, env) -> (args left, warnings).
_PREPARE: dict[str, str] = {
    "dynamo.frontend": "dynamo.frontend.config:strip_vllm_engine_args",  # `--dyn-chat-processor vllm`
}

# Helper modules of this package that manifests may run directly (no flags to check).
_UNCHECKED = {"dynamo.llm.tiny_model", "dynamo.deploy"}


def register_parser(module: str, factory: str | ParserFactory) -> None:
    _PARSERS[module] = factory


class ArgError(Exception):
    pass


@dataclass
class FlagCheck:
    """Outcome for one invocation: `errors` fail validation, `warnings` do not."""

    errors: list[str]
    warnings: list[str]


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load_parser(module: str) -> argparse.ArgumentParser | str:
    """The module's parser, or a reason why there is none."""
    factory = _PARSERS.get(module)
    if factory is None:
        return "no argument parser registered"
    try:
        if isinstance(factory, str):
            mod, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(mod), attr)
        return factory()
    except Exception as exc:  # ImportError, AttributeError, or a broken parser: not a manifest error
        return f"its argument parser could not be loaded ({type(exc).__name__}: {exc})"


def _raise(message: str):
    raise ArgError(message)


_SHELL_LIST = re.compile(r"\$[@*]|\$\{[@*]\}|\$\{\w+\[[@*]\]\}")


def check_args(module: str, args: list[str]) -> FlagCheck:
    if module in _UNCHECKED:
        return FlagCheck([], [])
    if not module_available(module):
        return FlagCheck([], [f"module {module} is not provided by this image"])
    parser = load_parser(module)
    if isinstance(parser, str):
        return FlagCheck([], [f"flags of {module} not checked: {parser}"])
    parser.error = _raise  # type: ignore[method-assign]  # collect instead of exiting
    for action in parser._actions:  # sub-parsers would exit too
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.error = _raise  # type: ignore[method-assign]
    compat = _compat_flags(module)
    if compat is not None:
        compat.add_to(parser)
    concrete, spread = _without_unknown_values(parser, args)
    spread = [f"{module}: {text}" for text in spread]
    concrete, prepared = _prepare(module, concrete)
    try:
        namespace, unknown = parser.parse_known_args(concrete)
        ignored = compat.check(namespace, _raise) if compat is not None else []
    except ArgError as exc:
        return FlagCheck([f"{module}: {exc}"], [])
    except SystemExit:  # --help / --version
        return FlagCheck([f"{module}: arguments make the program exit (--help?)"], [])
    errors = [f"{module}: unknown flag {a}" if a.startswith("-") else f"{module}: unexpected argument {a!r}"
              for a in unknown] + [f"{module}: {p}" for p in _content_problems(module, args)]
    return FlagCheck(errors, spread + [f"{module}: {text}" for text in prepared + ignored])


def _without_unknown_values(parser: argparse.ArgumentParser, args: list[str]) -> tuple[list[str], list[str]]:
    """`args` ready to parse when some words are filled in where the program runs (`$VAR`, `${VAR}`, a
    Kubernetes `$(VAR)` whose value is not known here), and what is not checked because of them. Such a
    word as a flag's value becomes a stand-in that flag accepts (the value is not type-checked); in a
    flag's place it may hold any number of words, flags included (`$EXTRA_ARGS`), so it is left out and
    named in a warning, as a shell list (`"${args[@]}"`, `$*`) is."""
    out, notes = [], []
    for i, arg in enumerate(args):
        if "$" not in arg:
            out.append(arg)
        elif arg.startswith("-") and "=" in arg:  # --flag=$VALUE
            flag = arg.split("=", 1)[0]
            action = parser._option_string_actions.get(flag)
            out.append(f"{flag}={_stand_in(action)}" if action is not None else arg)
        elif not _SHELL_LIST.fullmatch(arg) and i > 0 and _takes_value(parser, args[i - 1]):
            out.append(_stand_in(parser._option_string_actions[args[i - 1]]))
        elif not _SHELL_LIST.fullmatch(arg) and i > 0 and _unknown_flag(parser, args[i - 1]):
            if "." in args[i - 1]:  # a namespaced engine flag (`--trtllm.tokenizer`, checked later): its value
                out.append("0")
            # else the flag itself is reported as unknown: its value adds nothing
        elif arg.startswith("-"):
            out.append(arg)  # a flag's name is never filled in; an unknown one is reported as such
        else:
            kind = "a shell list" if _SHELL_LIST.fullmatch(arg) else "its value is not known here"
            shown = "$(...)" if arg == "$" else arg  # a shell script's `$(...)` reaches us cut at the `(`
            notes.append(f"the arguments {shown} expands to ({kind}) are not checked")
    return out, notes


def _unknown_flag(parser: argparse.ArgumentParser, word: str) -> bool:
    return word.startswith("--") and "=" not in word and word not in parser._option_string_actions


def _takes_value(parser: argparse.ArgumentParser, word: str) -> bool:
    action = parser._option_string_actions.get(word)
    return action is not None and action.nargs != 0


def _stand_in(action: argparse.Action | None) -> str:
    """A value `action` accepts, standing in for one not known here (never shown: it always parses)."""
    choices = list(action.choices) if action is not None and action.choices else []
    convert = action.type if action is not None and callable(action.type) else str
    candidates = [str(getattr(c, "value", c)) for c in choices[:1]] + [str(c) for c in choices[:1]]
    for candidate in [*candidates, "0", "1", "x", "{}", "[]"]:
        try:
            value = convert(candidate)
        except Exception:  # any conversion error: try the next candidate
            continue
        if not choices or value in choices:
            return candidate
    return candidates[0] if candidates else "0"


def _prepare(module: str, args: list[str]) -> tuple[list[str], list[str]]:
    path = _PREPARE.get(module)
    if path is None:
        return args, []
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)(args, {})


def _content_problems(module: str, args: list[str]) -> list[str]:
    """Flag values the program reads at start and refuses there (the pod would crash-loop)."""
    return _planner_config_problems(args) if module == "dynamo.planner" else _parser_name_problems(args)


def _planner_config_problems(args: list[str]) -> list[str]:
    """The planner's inline `--config` JSON, read by its own loader (a file or ConfigMap mount, or a
    value the shell fills in, is read only where it runs)."""
    from dynamo.deploy.commands import flag_value
    from dynamo.planner.config import load_config
    from dynamo.planner.connectors.base import connector_problem

    text = flag_value(args, ("--config",))
    if text is None or not text.lstrip().startswith("{") or "$" in text:
        return []
    try:
        problem = connector_problem(load_config(text).environment)
    except ValueError as exc:  # json.JSONDecodeError is one
        problem = str(exc)
    return [f"--config: the planner refuses this config at start: {problem}"] if problem else []


def _parser_name_problems(args: list[str]) -> list[str]:
    """A parser name the worker would refuse at start."""
    from dynamo.deploy.commands import flag_value
    from dynamo.llm.parser_names import check_parser_names

    tools, reasoning = (flag_value(args, (flag,)) for flag in ("--dyn-tool-call-parser", "--dyn-reasoning-parser"))
    try:
        check_parser_names(None if tools is None or "$" in tools else tools,
                           None if reasoning is None or "$" in reasoning else reasoning)
    except ValueError as exc:
        return [str(exc)]
    return []


def _compat_flags(module: str):
    path = _COMPAT.get(module)
    if path is None:
        return None
    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)

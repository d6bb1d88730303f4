"""`--trtllm.<dotted.key> VALUE` on `python -m dynamo.trtllm`: the boundary between these dynamic
engine-config flags on a command line and the nested dict of TensorRT-LLM `LLM(...)` arguments they
stand for.

NVIDIA Dynamo's worker (`DYNAMIC_FLAG_PREFIX = "--trtllm."`) takes any number of them, e.g.
`--trtllm.kv_cache_config.free_gpu_memory_fraction 0.8` -> `{"kv_cache_config":
{"free_gpu_memory_fraction": 0.8}}`. As there, the flags together take the place of
`--override-engine-args` (applied last, deep-merged) and may not be combined with it; a value is typed
none/null -> None, then int, then float, then true/false (any case) -> bool, else kept as text (no
YAML or JSON: `[1, 2]` stays a string). `--trtllm.KEY=VALUE` is accepted too (Dynamo itself only
takes the spaced form). The flags have no environment twin.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable, Sequence

PREFIX = "--trtllm."
logger = logging.getLogger(__name__)


class DynamicFlagError(ValueError):
    """A malformed `--trtllm.*` flag; the message names it."""


def infer_value(text: str) -> Any:
    """The typed value of one flag, in Dynamo's order (so "1" is an int, not True)."""
    if text.lower() in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _key_path(flag: str) -> list[str]:
    keys = flag[len(PREFIX):].split(".")
    if not all(keys):  # `--trtllm.`, `--trtllm..x`, `--trtllm.x.`: no engine argument is named ""
        raise DynamicFlagError(f"{flag}: empty key (expected {PREFIX}KEY[.SUBKEY...] VALUE)")
    return keys


def _set_nested(target: dict[str, Any], keys: list[str], value: Any, flag: str) -> None:
    for key in keys[:-1]:
        inner = target.setdefault(key, {})
        if inner is None:  # an earlier `--trtllm.a none`: a dict replaces it, as a later flag wins
            inner = target[key] = {}
        if not isinstance(inner, dict):  # `--trtllm.a 1 --trtllm.a.b 2`: neither reading is safe
            raise DynamicFlagError(f"{flag}: {key!r} is already set to the value {inner!r} by an earlier flag")
        target = inner
    target[keys[-1]] = value


def split_dynamic_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """(the arguments that are not `--trtllm.*` flags, in order; the nested dict those flags give).
    A later flag for the same key wins. Raises `DynamicFlagError` on a malformed one."""
    rest: list[str] = []
    overrides: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith(PREFIX):
            rest.append(arg)
            continue
        flag, eq, text = arg.partition("=")
        if not eq:
            # A following flag is not a value: `--trtllm.a --trtllm.b 1` forgot a's (Dynamo's rule;
            # one dash passes, so negative numbers do).
            if i >= len(args) or args[i].startswith("--"):
                raise DynamicFlagError(f"{flag} requires a value ({flag} VALUE or {flag}=VALUE)")
            text = args[i]
            i += 1
        _set_nested(overrides, _key_path(flag), infer_value(text), flag)
    return rest, overrides


def merged_override_json(override_engine_args: str | None, overrides: dict[str, Any]) -> str | None:
    """The `--override-engine-args` value once the dynamic flags are in: theirs as JSON. Dynamo
    refuses both at once rather than guess which of two override sets should win."""
    if not overrides:
        return override_engine_args
    if override_engine_args:
        raise DynamicFlagError("--override-engine-args (or DYN_TRTLLM_OVERRIDE_ENGINE_ARGS) and --trtllm.* flags "
                               "are mutually exclusive: use one or the other")
    return json.dumps(overrides)


class DynamicFlagParser(argparse.ArgumentParser):
    """An argument parser that also takes `--trtllm.*` flags (their dict lands in the namespace's
    `override_engine_args`, as JSON), so that `dynamo.deploy validate` checks a worker command line
    with the worker's own rules. A malformed one goes to `self.error`, which the validator collects."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        try:
            rest, overrides = split_dynamic_flags(sys.argv[1:] if args is None else args)
        except DynamicFlagError as exc:
            return self.error(str(exc))
        namespace, unknown = super().parse_known_args(rest, namespace)
        _fold_into(namespace, overrides, self.error)
        return namespace, unknown


def _fold_into(namespace: argparse.Namespace, overrides: dict[str, Any], error: Callable[[str], Any]) -> None:
    try:
        merged = merged_override_json(getattr(namespace, "override_engine_args", None), overrides)
    except DynamicFlagError as exc:
        error(str(exc))
        return
    if merged is not None:
        namespace.override_engine_args = merged


def apply_overrides(kwargs: dict[str, Any], overrides: dict[str, Any], path: str = "") -> None:
    """Merge `overrides` into `kwargs` at every depth, as Dynamo's `deep_update` does: a nested key
    replaces only itself, so `--trtllm.kv_cache_config.dtype fp8` keeps the block's other settings.
    Each value replaced is logged: an override that silently undoes a flag is hard to find."""
    for key, value in overrides.items():
        name = f"{path}.{key}" if path else key
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            apply_overrides(kwargs[key], value, name)
            continue
        if key in kwargs and kwargs[key] != value:
            logger.warning("engine argument override replaces %s: %r -> %r", name, kwargs[key], value)
        kwargs[key] = value

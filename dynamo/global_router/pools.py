"""The global router's pool plan: its JSON config file (NVIDIA Dynamo's `global_router_config.json`),
read and checked once at start, and the pure choice of a pool for a request.

Modes: `disagg` (default) has prefill pools chosen on a grid of (input length, TTFT target) and decode
pools on (context length, ITL target); `agg` has pools that do both, chosen on (TTFT target, ITL
target), or on (input length, TTFT target, ITL target) when all three `isl_*` keys are given. Each axis
is cut into `resolution` equal bands between its min and max; a value outside them falls in the
nearest band, an absent target in the middle of its range. A request's `nvext.agent_hints.priority`
that falls in a `priority_overrides` rule's [min_priority, max_priority] sends it to that rule's pool
instead (first match wins). With `enable_priority_retry`, a pool that fails before its first output
hands the request to faster pools (a lower `*_pool_priorities` value is faster; by default pool order),
slowest of them first.

Key names and meanings follow Dynamo 1.6; its older spellings (`ttft_min` for `ttft_min_ms`, ...) are
read with a warning. A config Dynamo would refuse is refused here too, naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("disagg", "agg")
# axis -> (its min key and older spelling, its max key and older spelling, its resolution key)
AXES = {
    "isl": (("isl_min",), ("isl_max",), "isl_resolution"),
    "context_length": (("context_length_min",), ("context_length_max",), "context_length_resolution"),
    "ttft": (("ttft_min_ms", "ttft_min"), ("ttft_max_ms", "ttft_max"), "ttft_resolution"),
    "itl": (("itl_min_ms", "itl_min"), ("itl_max_ms", "itl_max"), "itl_resolution"),
}
# role -> its axes, outermost first (the order of the mapping's nesting)
ROLE_AXES = {"prefill": ("isl", "ttft"), "decode": ("context_length", "itl"), "agg": ("ttft", "itl")}
ROLES = {"disagg": ("prefill", "decode"), "agg": ("agg",)}


class PoolConfigError(ValueError):
    """A config the router cannot run with; the message names the key."""


@dataclass(frozen=True)
class Axis:
    name: str
    low: float
    high: float
    resolution: int

    def band(self, value: float | None) -> int:
        """The band `value` falls in (clamped to the ends); None: the middle of the range."""
        if value is None:
            value = (self.low + self.high) / 2
        step = (self.high - self.low) / self.resolution
        return max(0, min(int((value - self.low) / step), self.resolution - 1))


@dataclass(frozen=True)
class Override:
    min_priority: float
    max_priority: float
    target_pool: int


@dataclass(frozen=True)
class PoolSet:
    """The pools of one role, and how a request picks one."""

    role: str
    namespaces: tuple[str, ...]
    priorities: tuple[int, ...]
    axes: tuple[Axis, ...]
    mapping: tuple  # nested tuples, one level per axis
    overrides: tuple[Override, ...] = ()

    def select(self, values: dict[str, float | None], priority: float | None = None) -> int:
        """The pool for a request whose axis values (`isl`, `context_length`, `ttft`, `itl`) are
        `values` (absent or None: the middle of the axis)."""
        cell: Any = self.mapping
        for axis in self.axes:
            cell = cell[axis.band(values.get(axis.name))]
        if priority is not None:
            for rule in self.overrides:
                if rule.min_priority <= priority <= rule.max_priority:
                    return rule.target_pool
        return cell

    def retry_order(self, selected: int, retry: bool) -> list[int]:
        """`selected`, then (with `retry`) the pools faster than it, slowest of them first."""
        if not retry:
            return [selected]
        mine = self.priorities[selected]
        faster = sorted((-p, i) for i, p in enumerate(self.priorities) if p < mine)
        return [selected, *(i for _, i in faster)]


@dataclass(frozen=True)
class PoolPlan:
    mode: str
    retry: bool
    pools: dict[str, PoolSet]  # role -> its pools
    warnings: tuple[str, ...] = ()


def load_plan(path: str | Path) -> PoolPlan:
    """The plan in the JSON file at `path` (PoolConfigError when it is unreadable or wrong)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PoolConfigError(f"cannot read the global router config {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PoolConfigError(f"{path} is not JSON: {exc}") from None
    return parse_plan(data)


def parse_plan(data: Any) -> PoolPlan:
    if not isinstance(data, dict):
        raise PoolConfigError("the global router config must be a JSON object")
    mode = data.get("mode", "disagg")
    if mode not in MODES:
        raise PoolConfigError(f"mode: unknown mode {mode!r}, must be 'disagg' or 'agg'")
    retry = data.get("enable_priority_retry", False)
    if not isinstance(retry, bool):
        raise PoolConfigError("enable_priority_retry must be a boolean")
    warnings: list[str] = []
    pools = {role: _pool_set(data, role, warnings) for role in ROLES[mode]}
    known = {"mode", "enable_priority_retry"}
    for role in ROLES[mode]:
        known |= {f"num_{role}_pools", *(f"{role}_pool_{k}" for k in ("dynamo_namespaces", "priorities",
                                                                      "selection_strategy"))}
    warnings += [f"{key}: not read in {mode} mode" for key in data if key not in known]
    return PoolPlan(mode, retry, pools, tuple(warnings))


def _pool_set(data: dict, role: str, warnings: list[str]) -> PoolSet:
    key = f"{role}_pool_dynamo_namespaces"
    namespaces = data.get(key)
    if not isinstance(namespaces, list) or not namespaces or not all(isinstance(n, str) and n for n in namespaces):
        raise PoolConfigError(f"{key} required for {role} pools: a non-empty list of Dynamo namespaces")
    count = data.get(f"num_{role}_pools", len(namespaces))
    if count != len(namespaces):
        raise PoolConfigError(f"num_{role}_pools ({count}) does not match {key} length ({len(namespaces)})")
    priorities = _priorities(data.get(f"{role}_pool_priorities"), len(namespaces), f"{role}_pool_priorities")
    skey = f"{role}_pool_selection_strategy"
    strategy = data.get(skey)
    if not isinstance(strategy, dict):
        raise PoolConfigError(f"{skey} required for {role} pools (an object)")
    names = ROLE_AXES[role]
    if role == "agg" and any(k in strategy for k in ("isl_min", "isl_max", "isl_resolution")):
        if not all(k in strategy for k in ("isl_min", "isl_max", "isl_resolution")):
            raise PoolConfigError(f"{skey}: isl_min, isl_max, and isl_resolution must be configured together")
        names = ("isl", *names)
    axes = tuple(_axis(strategy, name, skey, warnings) for name in names)
    mkey = f"{role}_pool_mapping"
    mapping = _mapping(strategy.get(mkey), axes, len(namespaces), f"{skey}.{mkey}")
    overrides = _overrides(strategy.get("priority_overrides", []), len(namespaces), f"{skey}.priority_overrides")
    return PoolSet(role, tuple(namespaces), priorities, axes, mapping, overrides)


def _priorities(given: Any, count: int, key: str) -> tuple[int, ...]:
    if given is None:
        return tuple(range(count))  # pool order: pool 0 is the fastest
    if not isinstance(given, list) or len(given) != count:
        raise PoolConfigError(f"{key} length ({len(given) if isinstance(given, list) else given!r}) does not "
                              f"match number of pools ({count})")
    for i, value in enumerate(given):
        if isinstance(value, bool) or not isinstance(value, int):
            raise PoolConfigError(f"{key}[{i}] must be an integer")
    return tuple(given)


def _number(strategy: dict, keys: tuple[str, ...], where: str, warnings: list[str]) -> float:
    for i, key in enumerate(keys):
        if key in strategy:
            value = strategy[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PoolConfigError(f"{where}.{key} must be a number, got {value!r}")
            if i:
                warnings.append(f"{where}.{key} is deprecated; use {keys[0]}")
            return value
    raise PoolConfigError(f"{where}.{keys[0]} is required")


def _axis(strategy: dict, name: str, where: str, warnings: list[str]) -> Axis:
    low_keys, high_keys, res_key = AXES[name]
    low = _number(strategy, low_keys, where, warnings)
    high = _number(strategy, high_keys, where, warnings)
    resolution = strategy.get(res_key)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise PoolConfigError(f"{where}.{res_key} must be a positive integer, got {resolution!r}")
    if low >= high:
        raise PoolConfigError(f"{where}: {low_keys[0]} ({low:g}) must be less than {high_keys[0]} ({high:g})")
    return Axis(name, float(low), float(high), resolution)


def _mapping(given: Any, axes: tuple[Axis, ...], pools: int, where: str) -> Any:
    """`given` checked against the axes (one nesting level each), as nested tuples."""
    axis, rest = axes[0], axes[1:]
    if not isinstance(given, list) or len(given) != axis.resolution:
        size = len(given) if isinstance(given, list) else "no list"
        raise PoolConfigError(f"{where}: {size} entries, {AXES[axis.name][2]} is {axis.resolution}")
    if rest:
        return tuple(_mapping(row, rest, pools, f"{where}[{i}]") for i, row in enumerate(given))
    for i, pool in enumerate(given):
        if isinstance(pool, bool) or not isinstance(pool, int) or not 0 <= pool < pools:
            raise PoolConfigError(f"{where}[{i}]: invalid pool index {pool!r} (must be 0 to {pools - 1})")
    return tuple(given)


def _overrides(given: Any, pools: int, where: str) -> tuple[Override, ...]:
    if not isinstance(given, list):
        raise PoolConfigError(f"{where} must be a list")
    rules = []
    for i, rule in enumerate(given):
        here = f"{where}[{i}]"
        if not isinstance(rule, dict) or set(rule) != {"min_priority", "max_priority", "target_pool"}:
            raise PoolConfigError(f"{here} must have exactly min_priority, max_priority and target_pool")
        low, high, target = rule["min_priority"], rule["max_priority"], rule["target_pool"]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high)):
            raise PoolConfigError(f"{here}: min_priority and max_priority must be numbers")
        if low > high:
            raise PoolConfigError(f"{here}: min_priority ({low}) must be <= max_priority ({high})")
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < pools:
            raise PoolConfigError(f"{here}: invalid target_pool {target!r} (must be 0 to {pools - 1})")
        rules.append(Override(low, high, target))
    return tuple(rules)

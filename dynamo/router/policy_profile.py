"""Policy profiles of NVIDIA Dynamo's router policy YAML (`--router-policy-config`): the classes one
pool's router queue is split into, how a request picks its class, and Dynamo 1.6.1's rules for a
valid profile (facts from its lib/kv-router/src/scheduling/policy_config.rs, checked against the
anchor install's own messages).

A profile is `default_policy_family`, `uncached_isl_buckets` ([{min_tokens, bucket}]: from 0,
strictly increasing) and `policy_classes`. A class bound to a (policy_family, cache_bucket) pair
takes the requests of that family whose uncached prompt tokens fall in that bucket; a class with
neither is explicit, chosen by its name. Every (family, bucket) pair has exactly one class. A
request that names no known class or family takes the default family. Without a profile the flags
make a one-class profile (`--router-queue-threshold`, `--router-queue-policy`), as in Dynamo.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NoReturn, Sequence

PROFILE_KEYS = ("default_policy_family", "policy_classes", "uncached_isl_buckets")
CLASS_KEYS = ("name", "policy_family", "cache_bucket", "queue_policy", "quantum", "prefill_busy_threshold",
              "prefill_busy_threshold_frac", "request_queue_limit_per_worker", "raw_isl_token_queue_limit_per_worker",
              "cached_token_queue_limit_per_worker")
_COUNTS = ("prefill_busy_threshold", "request_queue_limit_per_worker", "raw_isl_token_queue_limit_per_worker",
           "cached_token_queue_limit_per_worker")
# Dynamo parses fcfs, lcfs and wspt, and refuses lcfs in a policy class.
QUEUE_POLICIES = ("fcfs", "lcfs", "wspt")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]+\Z")


# -- typed reading of YAML values (serde's rules: no bool for a number, no float for a count) ---------
def fail(where: str, problem: str) -> NoReturn:
    raise ValueError(f"{where}: {problem}" if where else problem)


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "empty (null)", bool: "a boolean", str: "text"}.get(
        type(value), "a number")


def uint(value: Any, where: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:  # Dynamo's usize
        fail(where, f"must be a whole number >= 0 (got {value!r})")
    return value


def number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"must be a number (got {kind(value)}: {value!r})")
    return float(value)


def text(value: Any, where: str) -> str:
    """Text; a number or boolean reads as its text, as Dynamo's YAML reader takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    fail(where, f"must be text (got {kind(value)})")


def mapping(value: Any, where: str, keys: Sequence[str] | None = None) -> dict:
    if not isinstance(value, dict):
        fail(where, f"must be a YAML mapping (got {kind(value)})")
    unknown = sorted(str(k) for k in value if keys is not None and k not in keys)
    if unknown:
        fail(where, f"unknown key(s) {', '.join(unknown)}; expected one of {', '.join(keys or ())}")
    return value


def listing(value: Any, where: str) -> list:
    if not isinstance(value, list):
        fail(where, f"must be a YAML list (got {kind(value)})")
    return value


def identifier(name: str, what: str, where: str) -> None:
    if not _IDENTIFIER.match(name):
        fail(where, f"{what} name {name!r} must match [A-Za-z0-9_.-]+")


# -- the profile ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyClass:
    """One class: its own queue order, share of dispatches (`quantum`, in uncached prompt tokens per
    round), prefill busy thresholds and per-worker queue limits."""

    name: str
    quantum: int = 1
    queue_policy: str = "fcfs"
    policy_family: str | None = None
    cache_bucket: str | None = None
    prefill_busy_threshold: int | None = None  # active prefill tokens over which a worker is busy
    prefill_busy_threshold_frac: float | None = None  # ... over this times its max_num_batched_tokens
    request_queue_limit_per_worker: int | None = None  # queued requests of the class, per worker
    raw_isl_token_queue_limit_per_worker: int | None = None  # their prompt tokens
    cached_token_queue_limit_per_worker: int | None = None  # their cached prompt tokens

    @property
    def queueing(self) -> bool:
        """Whether the class sets a threshold of its own (Dynamo queues only such classes)."""
        return self.prefill_busy_threshold is not None or self.prefill_busy_threshold_frac is not None


@dataclass(frozen=True, eq=False)
class PolicyProfile:
    classes: tuple[PolicyClass, ...]
    source: str  # where it came from: "flags", "root" or "models.<name>"
    default_family: str = ""
    bucket_starts: tuple[int, ...] = (0,)
    table: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: {"": (0,)})  # family -> class per bucket
    explicit: Mapping[str, int] = field(default_factory=dict)  # explicit class name -> index

    @classmethod
    def synthetic(cls, threshold_frac: float | None, queue_policy: str) -> PolicyProfile:
        """The flags' one class: `--router-queue-threshold` and `--router-queue-policy`."""
        return cls((PolicyClass("default", 1, queue_policy, prefill_busy_threshold_frac=threshold_frac),), "flags")

    def class_index(self, requested: str | None, uncached_tokens: int) -> int:
        """An explicit class by name; else the requested family (or the default) at the request's
        uncached-prompt-length bucket."""
        if requested is not None and requested in self.explicit:
            return self.explicit[requested]
        row = self.table.get(requested or "") or self.table[self.default_family]
        return row[max(bisect.bisect_right(self.bucket_starts, uncached_tokens) - 1, 0)]

    @property
    def default_class(self) -> PolicyClass:
        return self.classes[self.class_index(None, 0)]

    @property
    def reachable(self) -> tuple[int, ...]:
        """The classes a request that names none can take (the default family's row)."""
        return tuple(sorted(set(self.table[self.default_family])))

    @property
    def by_length(self) -> bool:
        """Whether a request's class depends on its uncached prompt length."""
        return len(self.reachable) > 1

    @property
    def thresholds_vary(self) -> bool:
        """Whether the classes a request may take differ in busy thresholds (so a request is classified before
        it is placed, not only when it waits)."""
        levels = {(self.classes[i].prefill_busy_threshold, self.classes[i].prefill_busy_threshold_frac)
                  for i in self.reachable}
        return len(levels) > 1

    @property
    def needs_uncached(self) -> bool:
        """Whether a waiting request's uncached prompt tokens matter: for its class, its order (wspt), its
        price between classes or a limit on cached tokens."""
        reach = [self.classes[i] for i in self.reachable]
        return self.by_length or any(c.queue_policy == "wspt" or c.cached_token_queue_limit_per_worker is not None
                                     for c in reach)


def parse_profile(raw: Any, where: str) -> PolicyProfile:
    """A profile mapping (the document's root or one of `models:`), typed, then held to Dynamo's rules."""
    at = f"{where}." if where else ""
    raw = mapping(raw, where or "the document", PROFILE_KEYS)
    for key in PROFILE_KEYS:
        if raw.get(key) is None:
            fail(where or "the document", f"missing {key}")
    family = text(raw["default_policy_family"], at + "default_policy_family")
    classes = [_parse_class(item, f"{at}policy_classes[{i}]")
               for i, item in enumerate(listing(raw["policy_classes"], at + "policy_classes"))]
    buckets = [_parse_bucket(item, f"{at}uncached_isl_buckets[{i}]")
               for i, item in enumerate(listing(raw["uncached_isl_buckets"], at + "uncached_isl_buckets"))]
    identifier(family, "policy family", at + "default_policy_family")
    if not classes:
        fail(at + "policy_classes", "must not be empty")
    names = _check_buckets(buckets, at + "uncached_isl_buckets")
    _check_classes(classes, names, at + "policy_classes")
    return _resolve(classes, buckets, family, where or "root")


def _parse_class(raw: Any, where: str) -> PolicyClass:
    raw = mapping(raw, where, CLASS_KEYS)
    for key in ("name", "quantum"):
        if raw.get(key) is None:
            fail(where, f"missing {key}")
    optional_text = {k: (None if raw.get(k) is None else text(raw[k], f"{where}.{k}"))
                     for k in ("policy_family", "cache_bucket")}
    policy = text(raw.get("queue_policy", "fcfs"), f"{where}.queue_policy")
    if policy not in QUEUE_POLICIES:
        fail(f"{where}.queue_policy", f"unknown queue policy {policy!r}; expected fcfs or wspt")
    counts = {k: uint(raw.get(k), f"{where}.{k}", optional=True) for k in _COUNTS}
    frac = number(raw.get("prefill_busy_threshold_frac"), f"{where}.prefill_busy_threshold_frac", optional=True)
    return PolicyClass(text(raw["name"], f"{where}.name"), uint(raw["quantum"], f"{where}.quantum"), policy,
                       prefill_busy_threshold_frac=frac, **optional_text, **counts)


def _parse_bucket(raw: Any, where: str) -> tuple[int, str]:
    raw = mapping(raw, where, ("min_tokens", "bucket"))
    for key in ("min_tokens", "bucket"):
        if raw.get(key) is None:
            fail(where, f"missing {key}")
    return uint(raw["min_tokens"], f"{where}.min_tokens"), text(raw["bucket"], f"{where}.bucket")


def _check_buckets(buckets: list[tuple[int, str]], where: str) -> list[str]:
    if not buckets:
        fail(where, "must not be empty")
    if buckets[0][0] != 0:
        fail(f"{where}[0].min_tokens", "uncached_isl_buckets must start at min_tokens 0")
    for i in range(1, len(buckets)):
        if buckets[i][0] <= buckets[i - 1][0]:
            fail(f"{where}[{i}].min_tokens", "uncached_isl_buckets min_tokens must be strictly increasing")
    names: list[str] = []
    for i, (_, name) in enumerate(buckets):
        identifier(name, "cache bucket", f"{where}[{i}].bucket")
        if name in names:
            fail(f"{where}[{i}].bucket", f"duplicate cache bucket {name!r}")
        names.append(name)
    return names


def _check_classes(classes: list[PolicyClass], buckets: list[str], where: str) -> None:
    seen: set[str] = set()
    for i, c in enumerate(classes):
        at = f"{where}[{i}]"
        identifier(c.name, "policy class", at + ".name")
        if c.quantum == 0:
            fail(at + ".quantum", f"policy class {c.name!r}: quantum must be greater than zero")
        if c.queue_policy == "lcfs":
            fail(at + ".queue_policy", f"policy class {c.name!r}: queue_policy must be fcfs or wspt")
        frac = c.prefill_busy_threshold_frac
        if frac is not None and not (math.isfinite(frac) and frac >= 0):
            fail(at + ".prefill_busy_threshold_frac", f"policy class {c.name!r}: prefill_busy_threshold_frac must "
                 "be finite and non-negative")
        if (c.policy_family is None) != (c.cache_bucket is None):
            fail(at, f"policy class {c.name!r} must specify both policy_family and cache_bucket or neither for "
                 "an explicit class")
        if c.policy_family is not None:
            identifier(c.policy_family, "policy family", at + ".policy_family")
            identifier(c.cache_bucket or "", "cache bucket", at + ".cache_bucket")
            if c.cache_bucket not in buckets:
                fail(at + ".cache_bucket", f"policy class {c.name!r} references unknown cache bucket "
                     f"{c.cache_bucket!r}")
        if c.name in seen:
            fail(at + ".name", f"duplicate policy class {c.name!r}")
        seen.add(c.name)


def _resolve(classes: list[PolicyClass], buckets: list[tuple[int, str]], family: str, where: str) -> PolicyProfile:
    """The (family, bucket) -> class table, complete and unambiguous, and the explicit classes."""
    names = [name for _, name in buckets]
    families = list(dict.fromkeys(c.policy_family for c in classes if c.policy_family is not None))
    if family not in families:
        fail(where, f"default_policy_family {family!r} does not name a configured family")
    cells: dict[tuple[str, str], int] = {}
    explicit: dict[str, int] = {}
    for i, c in enumerate(classes):
        if c.policy_family is None:
            if c.name in families:
                fail(where, f"explicit policy class {c.name!r} collides with a policy family")
            explicit[c.name] = i
        elif cells.setdefault((c.policy_family, c.cache_bucket or ""), i) != i:
            fail(where, f"duplicate policy classes for family {c.policy_family!r} and bucket {c.cache_bucket!r}")
    for f in families:
        for b in names:
            if (f, b) not in cells:
                fail(where, f"missing a policy class for family {f!r} and bucket {b!r}")
    table = {f: tuple(cells[(f, b)] for b in names) for f in families}
    return PolicyProfile(tuple(classes), where, family, tuple(start for start, _ in buckets), table, explicit)

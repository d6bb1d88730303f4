"""KV-router configuration: the single source of every router setting.

Flag names and `DYN_*` env twins follow NVIDIA Dynamo (current `--router-*` names plus
the classic aliases). The frontend and the standalone `dynamo.router` service embed this
dataclass and add its flags with `dynamo.runtime.config.add_arguments(parser, KvRouterConfig)`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping

from dynamo.runtime.config import env_names, flag_names, setting


# `--router-mode` values, Dynamo's names; each is a policy in router/policy.py's registry.
ROUTER_MODES = ("round-robin", "random", "power-of-two", "kv", "direct", "least-loaded", "device-aware-weighted")


# What NVIDIA Dynamo's nullable_float / nullable_int read as unset: a manifest may pass
# `--active-decode-blocks-threshold None` (its help says so) or template `DYN_...: "None"`.
UNSET_TEXTS = ("", "None")


class NullableFloat(float):
    """The type of a float setting that may be unset. The generated CLI (runtime/config.py) converts a
    flag's or `DYN_*` variable's text by calling the field's type, so this type is where Dynamo's
    spellings of unset (`UNSET_TEXTS`) become None; any other text parses as a plain float."""

    def __new__(cls, raw: str | float) -> float | None:  # type: ignore[misc]
        return None if raw in UNSET_TEXTS else float(raw)


class NullableInt(int):
    """`NullableFloat` for an integer setting."""

    def __new__(cls, raw: str | int) -> int | None:  # type: ignore[misc]
        return None if raw in UNSET_TEXTS else int(raw)


@dataclass(frozen=True)
class Bound:
    """The values a numeric setting may take: finite, from `low` (itself excluded when `open_low`)
    up to `high`. NaN compares false with everything, so a plain `value < low` would let it through."""

    low: float = 0.0
    high: float = math.inf
    open_low: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        return math.isfinite(value) and above and value <= self.high

    def describe(self, value: float) -> str:
        if self.high != math.inf:
            return f"> {self.low:g} and <= {self.high:g}" if self.open_low else \
                f"between {self.low:g} and {self.high:g}"
        low = f"{'>' if self.open_low else '>='} {self.low:g}"
        return low if isinstance(value, int) else f"finite and {low}"


def setting_name(config: Any, name: str) -> str:
    """How a user sets field `name`: its first flag and its variable (a value may come from either)."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    spellings = flag_names(field)[:1] + env_names(field)[:1]
    return " / ".join(spellings) or name


def check_bounds(config: Any, bounds: Mapping[str, Bound]) -> None:
    """ValueError naming the first setting of `bounds` outside its range; unset (None) ones pass."""
    for name, bound in bounds.items():
        value = getattr(config, name)
        if value is not None and not bound.admits(value):
            raise ValueError(f"{setting_name(config, name)} must be {bound.describe(value)} (got {value!r})")


def check_finite(config: Any) -> None:
    """ValueError naming the first float setting of `config` that is NaN or infinite: `float()` parses
    'nan' and 'inf', and no setting means anything by them (unset is how a limit is turned off)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{setting_name(config, field.name)} must be a finite number (got {value!r})")


class KvMode(enum.StrEnum):
    """How a KV router knows what workers cache: one spelling for the configured mode, the mode
    in effect (`/health` `router.models[name].mode`, the router-mode metric's label) and logs."""

    KV_EVENTS = "kv-events"  # indexed from the workers' KV events: exact
    APPROXIMATE = "approximate"  # predicted from routing decisions (no events, or --no-router-kv-events)
    LOAD_ONLY = "load-only"  # overlap weight 0: load balancing only, no index


@dataclass
class KvRouterConfig:
    """KV-cache-aware routing settings."""

    overlap_score_weight: float = setting(
        1.0,
        "Weight of prefill blocks in the cost (0 = pure load balancing, no indexer)",
        env="DYN_OVERLAP_SCORE_WEIGHT",
        flag=["--kv-overlap-score-weight", "--router-kv-overlap-score-weight"],
    )
    # Default 'ttft': in benchmarks/routing_quality.py it beats the classic cost on prefix groups and on
    # long shared prefixes near saturation (p99); its prefill slope never fits below the prior, so noisy
    # TTFTs on a loaded host cannot make it ignore cache hits. A deployment or request that tunes
    # Dynamo's cost (overlap weight other than 1, a temperature, a per-request override) gets it.
    router_cost_model: str = setting(
        "ttft", "Worker cost: 'ttft' = predicted time to first token (queued prefill, new prefill after cache "
        "hits, decode load), fitted online to observed TTFTs; 'dynamo' = NVIDIA Dynamo's classic "
        "overlap_score_weight * prefill_blocks + decode_blocks (also used whenever --kv-overlap-score-weight is "
        "not 1 or --router-temperature is set)", choices=["ttft", "dynamo"])
    # NVIDIA Dynamo 1.6.1's cost knobs (dynamo_cost.py); any of them off its default selects that cost.
    router_kv_overlap_score_credit: float = setting(
        1.0, "Dynamo cost: credit per cached prompt token against the prefill cost (0 = ignore caches, no "
        "indexer; above 1 favours cache hits more)")
    router_kv_overlap_score_credit_decay: float = setting(
        0.0, "Dynamo cost: shrink a worker's cache credit as its queued prefill exceeds the least-queued "
        "worker's (1 halves it at one prompt's worth; 0 = off)")
    router_prefill_load_scale: float = setting(1.0, "Dynamo cost: weight of the prefill term after cache credit")
    router_host_cache_hit_weight: float = setting(
        0.75, "Credit, relative to a device-cache hit, for prompt blocks a worker holds only in host memory "
        "(KV events with medium CPU / tier host_pinned: copied back instead of recomputed), 0 to 1")
    router_disk_cache_hit_weight: float = setting(
        0.25, "Credit, relative to a device-cache hit, for prompt blocks a worker holds only on disk "
        "(KV events of tier disk), 0 to 1")
    router_decode_active_request_weight: float = setting(
        0.0, "Dynamo cost: blocks of decode cost added per running request (balances batch sizes)")
    load_aware: bool = setting(
        False, "Dynamo's load-aware preset: no cache credit, no KV events or KV-reuse assumption, active-block "
        "and prefill-token tracking on (on the frontend it implies --router-mode kv)", env="DYN_ROUTER_LOAD_AWARE")
    router_temperature: float = setting(
        0.0, "Softmax sampling temperature over worker costs (0 = argmin)", env="DYN_ROUTER_TEMPERATURE"
    )
    use_kv_events: bool = setting(
        True,
        "Index KV events from workers; off = approximate mode (predict caches from routing decisions)",
        env="DYN_ROUTER_USE_KV_EVENTS",
        flag=["--router-kv-events", "--kv-events"],
    )
    router_ttl_secs: float = setting(120.0, "Block TTL in approximate mode (seconds)")
    router_approximate_cache_policy: str = setting(
        "ttl", "How long approximate mode believes a worker keeps what it was sent: 'ttl' (--router-ttl-secs) or "
        "'lru' (as many blocks as its KV cache holds, least recently routed out first; TTL until its size is "
        "known)", choices=["ttl", "lru"])
    router_max_tree_size: int = setting(2**20, "Max radix-tree nodes in approximate mode before pruning")
    router_prune_target_ratio: float = setting(0.8, "Prune the approximate tree down to this fraction of max size")
    router_replica_sync: bool = setting(False, "Share active-sequence events between router replicas")
    router_track_active_blocks: bool = setting(
        True, "Track decode load (active blocks) per worker", flag=["--router-track-active-blocks", "--track-active-blocks"]
    )
    router_track_output_blocks: bool = setting(
        True, "Count the blocks a request's answer will fill (from its max_tokens when given, capped "
        "at --router-output-blocks-horizon tokens) in its worker's decode load",
        flag=["--router-track-output-blocks", "--track-output-blocks"])
    router_output_blocks_horizon: int = setting(
        1024, "Most output tokens a request is assumed to generate for output-block tracking")
    router_inflight_prefix_credit: bool = setting(
        True, "Count prompt blocks that an earlier in-flight request on a worker shares (bursts of one system "
        "prompt: not yet in the KV index) as cached there when estimating prefill work")
    router_shared_prefix_amortization: bool = setting(
        True, "ttft cost: charge a worker the prefill of prompt blocks it lacks but another worker holds at "
        "1/(n+1) per block, n the decoding requests holding that block (on an idle worker, those still "
        "prefilling it too): a prefix many requests use (one system prompt for every agent) is worth copying to "
        "an idle worker instead of piling all its traffic on one")
    router_step_wait: bool = setting(
        True, "ttft cost: add the rest of each worker's running engine step, timed from the outputs it sends "
        "(a request waits for the step in progress before its own prefill runs)")
    router_assume_kv_reuse: bool = setting(True, "Count identical blocks across active requests once",
                                           flag=["--router-assume-kv-reuse", "--assume-kv-reuse"])
    router_track_prefill_tokens: bool = setting(True, "Include pending prompt tokens in the load")
    # Nullable* types: 'None' (or nothing) on the flag or its variable means unset, as in Dynamo.
    active_decode_blocks_threshold: NullableFloat | None = setting(
        None, "Worker busy when active blocks / total KV blocks exceeds this (0..1; unset or 'None' = off)"
    )
    active_prefill_tokens_threshold: NullableInt | None = setting(
        None, "Worker busy when active prefill tokens exceed this (unset or 'None' = off)"
    )
    active_prefill_tokens_threshold_frac: NullableFloat | None = setting(
        None, "Worker busy when active prefill tokens exceed frac x max_num_batched_tokens (unset or 'None' = off)"
    )
    router_queue_max_requests: int = setting(
        1024, "When every worker is busy, hold up to this many requests in the router queue instead of "
        "answering 503 at once (0: no queue)")
    router_queue_timeout_secs: float = setting(
        10.0, "Longest a request waits in the router queue before it is answered 503")
    router_queue_threshold: NullableFloat | None = setting(
        None, "Queue requests in the router while every worker's active prefill tokens exceed this fraction "
        "of its max_num_batched_tokens (workers above it are left out of routing; unset or 'None' = off; a worker "
        "whose max_num_batched_tokens is unknown never counts as saturated)")
    router_queue_policy: str = setting(
        "fcfs", "Order of the router queue: 'fcfs' (oldest first, nvext.agent_hints.priority jumps the line by "
        "that many seconds: bounds tail TTFT), 'wspt' (least new prefill first, weighted by 1 + priority: "
        "lowers mean TTFT), 'lcfs' (newest first); nvext.agent_hints.strict_priority tiers precede all",
        choices=["fcfs", "wspt", "lcfs"])
    router_policy_config: str | None = setting(
        None, "NVIDIA Dynamo's router policy YAML, read once at start: its `router:` settings (Dynamo's names; they "
        "win over these flags and --load-aware) and its policy profiles, which split each model's router queue "
        "into classes (own queue order, busy thresholds, per-worker limits; shared by quantum) "
        "(dynamo/router/policy_config.py)", metavar="FILE")
    inhibited_duration_secs: float = setting(
        5.0, "Seconds a worker that failed (unreachable, stream broken or timed out, draining) is left out of this "
        "process's routing before discovery catches up (0: off)", env="DYN_INHIBITED_DURATION_SECS")

    def validate(self) -> None:
        if self.load_aware:  # a preset: resolved before anything reads the settings it sets
            self.router_kv_overlap_score_credit = 0.0
            self.use_kv_events = self.router_assume_kv_reuse = False
            self.router_track_active_blocks = self.router_track_prefill_tokens = True
        document = self.policy_document()
        if document is not None:  # as in Dynamo: the YAML's settings win over the flags and the preset
            for name, value in document.router.items():
                setattr(self, name, value)
        check_bounds(self, ROUTER_BOUNDS)
        if self.router_queue_max_requests == 0 and (self.router_queue_threshold is not None or _queues(document)):
            what = "--router-queue-threshold" if self.router_queue_threshold is not None else \
                "--router-policy-config's busy thresholds"
            raise ValueError(f"{what} queue requests: it needs --router-queue-max-requests > 0")

    def routes_by_kv(self) -> bool:
        """Whether this process routes with the KV router (whose queue the policy profiles shape)."""
        return True

    def policy_warnings(self) -> list[str]:
        """What `--router-policy-config` holds that has no effect here, for the start-up log."""
        document = self.policy_document()
        if document is None:
            return []
        flags = [f for f, given in (("--router-queue-threshold", self.router_queue_threshold is not None),
                                    ("--router-queue-policy", self.router_queue_policy != "fcfs")) if given]
        replaced = "every model" if document.root is not None else ", ".join(sorted(document.models))
        if flags and replaced:  # as in Dynamo, a profile replaces the flags' one queue class
            verb = "applies" if len(flags) == 1 else "apply"
            return [*document.warnings, f"{' and '.join(flags)} {verb} to no model with a policy profile in "
                    f"--router-policy-config {document.path} ({replaced}): its classes replace them, as in Dynamo"]
        return list(document.warnings)

    def policy_document(self):
        """The `--router-policy-config` document (policy_config.py), read at the first call (`validate`,
        at start) and kept: a later call, or a re-validation, never reads the file again."""
        path = self.router_policy_config
        if not path:
            return None
        cached = self.__dict__.get("_policy_document")
        if cached is None or cached.path != path:
            from dynamo.router.policy_config import load_policy_config  # it reads this module's bounds

            cached = self.__dict__["_policy_document"] = load_policy_config(path, profiles=self.routes_by_kv())
        return cached

    @property
    def mode(self) -> KvMode:
        """The configured mode (overlap weight or cache credit 0 disables the indexer)."""
        if self.overlap_score_weight == 0 or self.router_kv_overlap_score_credit == 0:
            return KvMode.LOAD_ONLY
        return KvMode.KV_EVENTS if self.use_kv_events else KvMode.APPROXIMATE


def _queues(document) -> bool:
    """Whether a policy document gives some class a busy threshold of its own (so requests may queue)."""
    profiles = [] if document is None else [document.root, *document.models.values()]
    return any(c.queueing for p in profiles if p is not None for c in p.classes)


_AT_LEAST_0 = Bound()
_FRACTION = Bound(0.0, 1.0)
# Every numeric router setting and the values it may take (a test keeps this complete); unset ones pass.
ROUTER_BOUNDS: dict[str, Bound] = {
    "overlap_score_weight": _AT_LEAST_0,
    "router_kv_overlap_score_credit": _AT_LEAST_0,
    "router_kv_overlap_score_credit_decay": _AT_LEAST_0,
    "router_prefill_load_scale": _AT_LEAST_0,
    "router_host_cache_hit_weight": _FRACTION,
    "router_disk_cache_hit_weight": _FRACTION,
    "router_decode_active_request_weight": _AT_LEAST_0,
    "router_temperature": _AT_LEAST_0,
    "router_ttl_secs": Bound(open_low=True),
    "router_max_tree_size": Bound(1),
    "router_prune_target_ratio": Bound(0.0, 1.0, open_low=True),
    "router_output_blocks_horizon": _AT_LEAST_0,
    "active_decode_blocks_threshold": _FRACTION,  # Dynamo refuses a fraction outside [0, 1] too
    "active_prefill_tokens_threshold": _AT_LEAST_0,
    "active_prefill_tokens_threshold_frac": _AT_LEAST_0,
    "router_queue_max_requests": _AT_LEAST_0,
    "router_queue_timeout_secs": _AT_LEAST_0,
    "router_queue_threshold": _AT_LEAST_0,
    "inhibited_duration_secs": _AT_LEAST_0,
}


@dataclass
class RouterConfigOverride:
    """Per-request overrides (Dynamo's `RouterConfigOverride`); None keeps the router's value."""

    overlap_score_weight: float | None = None
    router_temperature: float | None = None


def override_error(override: Mapping[str, Any] | None) -> str | None:
    """Why a request's `router_config_override` cannot be applied (a key no override has, a value outside its
    setting's range: NaN, negative, infinite), or None. Stricter than Dynamo's serde struct, which drops unknown
    keys: `RouteQuery` is this project's own query, and a misspelt key doing nothing is worse than a 400."""
    known = [f.name for f in dataclasses.fields(RouterConfigOverride)]
    for key, value in (override or {}).items():
        if key not in known:
            return f"router_config_override: unknown key {key!r} (keys: {', '.join(known)})"
        if value is not None and not ROUTER_BOUNDS[key].admits(value):
            return f"router_config_override.{key} must be {ROUTER_BOUNDS[key].describe(value)} (got {value!r})"
    return None

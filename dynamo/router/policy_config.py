"""NVIDIA Dynamo's router policy YAML, `--router-policy-config FILE` (DYN_ROUTER_POLICY_CONFIG): the
boundary where that document becomes typed settings. It is read once, at start; a document NVIDIA
Dynamo 1.6.1 refuses stops the process with a message naming the file and the key.

- `router:` holds shared router settings under Dynamo's names (its `_ROUTER_SETTINGS`); they win over
  the flags and the `--load-aware` preset, as in Dynamo. Those this router acts on map onto
  KvRouterConfig fields and pass the bounds of their flags; the others are accepted with the warning
  their flags get (compat_flags.py).
- The root profile and `models:` profiles (policy_profile.py) split a pool's router queue into
  classes (class_queue.py); a model's own profile replaces the root one for that model.
- `worker_selection` and `request_classifier` configure Dynamo's plugins: checked as Dynamo checks
  them, then accepted with a warning (no plugin runs here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from dynamo.router.compat_flags import ROUTER_IGNORED
from dynamo.router.config import ROUTER_BOUNDS, Bound
from dynamo.router.policy_profile import (PROFILE_KEYS, PolicyProfile, fail, identifier, kind, listing, mapping,
                                          parse_profile, text)

TOP_KEYS = ("router", *PROFILE_KEYS, "models", "worker_selection", "request_classifier")
_COMPAT = "is accepted for compatibility with NVIDIA Dynamo and has no effect"


@dataclass(frozen=True)
class RouterSetting:
    """A `router:` key: the KvRouterConfig field it sets (None: not acted on here), its type as
    Dynamo checks it, its choices, and the values that need no warning when it is not acted on."""

    field: str | None
    kind: type
    optional: bool = False
    choices: tuple[str, ...] = ()
    quiet: tuple[Any, ...] = (False, None, "none")


_BOOL_FIELDS = ("use_kv_events", "router_replica_sync", "router_track_active_blocks", "router_track_output_blocks",
                "router_assume_kv_reuse", "router_track_prefill_tokens")
# Dynamo 1.6.1's `_ROUTER_SETTINGS`, with the types of its KvRouterConfigBase.
ROUTER_SETTINGS: dict[str, RouterSetting] = {
    "host_cache_hit_weight": RouterSetting("router_host_cache_hit_weight", float),
    "disk_cache_hit_weight": RouterSetting("router_disk_cache_hit_weight", float),
    **{name: RouterSetting(name, bool) for name in _BOOL_FIELDS},
    "router_tracking_hash": RouterSetting(None, str, choices=("public-xxh3-v1", "keyed-xxh3-v1"),
                                          quiet=("public-xxh3-v1",)),
    "router_tracking_key_file": RouterSetting(None, str, optional=True),
    "router_tracking_key_id": RouterSetting(None, str, optional=True),
    "router_prefill_load_model": RouterSetting(None, str, choices=("none", "aic", "ais")),
    "router_ttl_secs": RouterSetting("router_ttl_secs", float),
    "router_approximate_cache_policy": RouterSetting("router_approximate_cache_policy", str, choices=("ttl", "lru")),
    "router_event_threads": RouterSetting(None, int, quiet=(4,)),
    "use_remote_indexer": RouterSetting(None, bool),
    "serve_indexer": RouterSetting(None, bool),
    "enable_session_prefix_index": RouterSetting(None, bool),
    "shared_cache_type": RouterSetting(None, str, choices=("none", "hicache")),
    "router_predicted_ttl_secs": RouterSetting(None, float, optional=True),
}
_EXTRA_BOUNDS = {"router_event_threads": Bound(1)}  # Dynamo's KvRouterConfig: at least one thread


@dataclass(frozen=True, eq=False)
class PolicyDocument:
    path: str
    router: Mapping[str, Any]  # KvRouterConfig field -> value, from `router:`
    root: PolicyProfile | None = None
    models: Mapping[str, PolicyProfile] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # logged at start

    def profile_for(self, model: str | None, threshold_frac: float | None, queue_policy: str) -> PolicyProfile:
        """The model's own profile, else the root one, else the flags' one class (as Dynamo resolves it)."""
        own = self.models.get(model) if model is not None else None
        return own or self.root or PolicyProfile.synthetic(threshold_frac, queue_policy)


def load_policy_config(path: str, profiles: bool = True) -> PolicyDocument:
    """The document at `path`; ValueError naming the file and the key when Dynamo would refuse it.
    `profiles=False` (routing that has no router queue) reads only `router:`, as Dynamo does then."""
    try:
        return _load(path, profiles)
    except ValueError as exc:
        raise ValueError(f"--router-policy-config {path}: {exc}") from None


def _load(path: str, profiles: bool) -> PolicyDocument:
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail("", f"cannot be read ({exc.strerror or exc})")
    try:
        document = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        fail("", "is not valid YAML: " + " ".join(str(exc).split()))
    if not isinstance(document, dict):
        fail("", f"must contain a YAML mapping (got {kind(document)})")
    mapping(document, "", TOP_KEYS)
    router, warnings = router_settings(document.get("router"), path)
    if not profiles:
        if any(document.get(key) is not None for key in TOP_KEYS[1:]):
            warnings.append(f"--router-policy-config {path}: its policy profiles and plugins apply to --router-mode "
                            "kv only (the router queue); not read")
        return PolicyDocument(path, router, warnings=tuple(warnings))
    root, models = _profiles(document)
    warnings += _plugin_warnings(document, path)
    warnings += [_unreachable(profile, path) for profile in (root, *models.values())
                 if profile is not None and len(profile.reachable) < len(profile.classes)]
    if document.get("router") is None and root is None and not models and not _plugins(document):
        fail("", "must define router settings, a root profile, at least one model profile, worker_selection, or "
             "request_classifier")
    return PolicyDocument(path, router, root, models, tuple(warnings))


def router_settings(section: Any, path: str) -> tuple[dict[str, Any], list[str]]:
    """(KvRouterConfig field -> value, a warning per setting not acted on here) of the `router:` section."""
    if section is None:
        return {}, []
    mapping(section, "router", tuple(ROUTER_SETTINGS))
    settings, warnings = {}, []
    for name, value in section.items():
        spec = ROUTER_SETTINGS[name]
        value = _typed(value, spec, f"router.{name}")
        bound = ROUTER_BOUNDS.get(spec.field or "") or _EXTRA_BOUNDS.get(name)
        if bound is not None and value is not None and not bound.admits(value):
            fail(f"router.{name}", f"must be {bound.describe(value)} (got {value!r})")
        if spec.field is not None:
            settings[spec.field] = value
        elif value not in spec.quiet:  # turned off, or Dynamo's default: nothing to say
            why = ROUTER_IGNORED[("--" + name.replace("_", "-"),)][1]
            warnings.append(f"router.{name} in --router-policy-config {path} {_COMPAT}: {why}")
    return settings, warnings


def _typed(value: Any, spec: RouterSetting, where: str) -> Any:
    """`value` as Dynamo's msgspec conversion takes it: no bool for a number, no float for an integer,
    an integer for a float; text only from text."""
    if value is None and spec.optional:
        return None
    ok = {bool: isinstance(value, bool), str: isinstance(value, str),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)}[spec.kind]
    if not ok:
        fail(where, f"must be {_TYPE_NAMES[spec.kind]} (got {kind(value)}: {value!r})")
    if spec.choices and value not in spec.choices:
        fail(where, f"must be one of {', '.join(spec.choices)} (got {value!r})")
    return float(value) if spec.kind is float else value


_TYPE_NAMES = {bool: "true or false", str: "text", int: "a whole number", float: "a number"}


def _profiles(document: dict) -> tuple[PolicyProfile | None, dict[str, PolicyProfile]]:
    given = [key for key in PROFILE_KEYS if document.get(key) is not None]
    if given and len(given) != len(PROFILE_KEYS):
        fail("", "root profile must specify default_policy_family, uncached_isl_buckets, and policy_classes when "
             "any root profile field is present")
    root = parse_profile({key: document[key] for key in PROFILE_KEYS}, "") if given else None
    models: dict[str, PolicyProfile] = {}
    for name, raw in mapping(document.get("models", {}), "models").items():
        name = text(name, "models")
        if not name:
            fail("models", "model profile name must not be empty")
        models[name] = parse_profile(raw, f"models.{name}")
    return root, models


def _plugins(document: dict) -> list[str]:
    return [key for key in ("worker_selection", "request_classifier") if document.get(key) is not None]


def _plugin_warnings(document: dict, path: str) -> list[str]:
    warnings = []
    if document.get("worker_selection") is not None:
        _check_worker_selection(document["worker_selection"])
        warnings.append(f"worker_selection in --router-policy-config {path} {_COMPAT}: Dynamo's worker-selection "
                        "plugins are not provided by this router (it selects workers with its own cost)")
    if document.get("request_classifier") is not None:
        _check_classifier(document["request_classifier"])
        warnings.append(f"request_classifier in --router-policy-config {path} {_COMPAT}: Dynamo's request-classifier "
                        "plugins are not provided by this router (a request takes its profile's default family)")
    return warnings


def _check_worker_selection(raw: Any) -> None:
    """Dynamo 1.6.1's worker_selection rules: named instances of plugin types, and the stages' choices."""
    raw = mapping(raw, "worker_selection", ("aggregated", "prefill", "decode", "encode", "instances"))
    stages = {k: text(raw[k], f"worker_selection.{k}") for k in ("aggregated", "prefill", "decode", "encode")
              if raw.get(k) is not None}
    instances: list[str] = []
    for i, item in enumerate(listing(raw.get("instances") or [], "worker_selection.instances")):
        at = f"worker_selection.instances[{i}]"
        item = mapping(item, at, ("name", "type", "parameters"))
        for key in ("name", "type"):
            if item.get(key) is None:
                fail(at, f"missing {key}")
        name = text(item["name"], at + ".name")
        identifier(name, "instance", at + ".name")
        if name == "default":
            fail(at + ".name", "instance name 'default' is reserved for Dynamo's built-in selector")
        identifier(text(item["type"], at + ".type"), "policy type", at + ".type")
        mapping(item.get("parameters", {}), at + ".parameters")
        if name in instances:
            fail(at + ".name", f"duplicate instance {name!r}")
        instances.append(name)
    if not instances and not stages:
        fail("worker_selection", "must define an instance or an aggregated, prefill, decode, or encode selection")
    for stage, chosen in stages.items():
        if chosen != "default" and chosen not in instances:
            fail(f"worker_selection.{stage}", f"{chosen!r} does not name a configured instance")


def _check_classifier(raw: Any) -> None:
    raw = mapping(raw, "request_classifier", ("type", "parameters"))
    if raw.get("type") is None:
        fail("request_classifier", "missing type")
    name = text(raw["type"], "request_classifier.type")
    identifier(name, "classifier type", "request_classifier.type")
    if name == "default":
        fail("request_classifier.type", "type 'default' is reserved; omit request_classifier to use Dynamo's "
             "pass-through classifier")
    mapping(raw.get("parameters", {}), "request_classifier.parameters")


def _unreachable(profile: PolicyProfile, path: str) -> str:
    idle = [c.name for i, c in enumerate(profile.classes) if i not in profile.reachable]
    return (f"--router-policy-config {path}: {profile.source} policy classes {', '.join(idle)} receive no requests "
            f"here: a request takes the default family {profile.default_family!r} at its uncached prompt length, as "
            "in Dynamo 1.6.1, whose HTTP API names no policy class or family (only its request-classifier plugins do)")

"""`--router-policy-config`'s document (router/policy_config.py, policy_profile.py): what NVIDIA
Dynamo 1.6.1 accepts it accepts, what Dynamo refuses it refuses with a message naming the file and
the key. Each refusal below was checked against the anchor install (its KvRouterConfig reading the
same YAML, and `python -m dynamo.frontend --router-policy-config` for the `router:` section)."""

from __future__ import annotations

import textwrap

import pytest

from dynamo.router.policy_config import ROUTER_SETTINGS, load_policy_config
from dynamo.router.policy_profile import PolicyProfile

PROFILE = """
default_policy_family: standard
uncached_isl_buckets:
  - min_tokens: 0
    bucket: small
  - min_tokens: 512
    bucket: large
policy_classes:
  - name: short
    policy_family: standard
    cache_bucket: small
    queue_policy: wspt
    quantum: 4
    prefill_busy_threshold_frac: 1.5
  - name: long
    policy_family: standard
    cache_bucket: large
    quantum: 1
    prefill_busy_threshold: 4096
    request_queue_limit_per_worker: 8
"""
ONE = """
default_policy_family: standard
uncached_isl_buckets:
  - min_tokens: 0
    bucket: all
policy_classes:
  - name: a
    policy_family: standard
    cache_bucket: all
    quantum: 1
"""


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "policy.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def test_a_profile_classifies_by_uncached_prompt_length(write):
    doc = load_policy_config(write(PROFILE))
    root = doc.root
    assert [c.name for c in root.classes] == ["short", "long"] and doc.router == {} and doc.warnings == ()
    assert (root.class_index(None, 0), root.class_index(None, 511), root.class_index(None, 512)) == (0, 0, 1)
    assert root.default_class.name == "short" and root.by_length and root.thresholds_vary
    assert root.class_index("unknown-family", 10_000) == 1  # an unknown family takes the default one
    long = root.classes[1]
    assert (long.queue_policy, long.prefill_busy_threshold, long.request_queue_limit_per_worker) == ("fcfs", 4096, 8)


def test_a_models_profile_replaces_the_root_one_for_its_model(write):
    model = textwrap.indent(textwrap.dedent(ONE).replace("quantum: 1", "quantum: 2\n    queue_policy: wspt"), "    ")
    doc = load_policy_config(write(PROFILE + "models:\n  llama:\n" + model))
    assert doc.profile_for("llama", None, "fcfs").default_class.queue_policy == "wspt"
    assert doc.profile_for("other", None, "fcfs").default_class.name == "short"  # the root's
    only_models = load_policy_config(write("models:\n  llama:\n" + model, "models.yaml"))
    flags = only_models.profile_for("other", 0.5, "fcfs")  # no root: the flags' one class, as in Dynamo
    assert (flags.source, flags.default_class.prefill_busy_threshold_frac) == ("flags", 0.5)
    assert PolicyProfile.synthetic(None, "lcfs").default_class.queue_policy == "lcfs"


def test_explicit_classes_and_other_families_are_accepted_and_named_as_idle(write):
    extra = ("  - name: vip\n    quantum: 8\n  - name: batch-all\n    policy_family: batch\n    cache_bucket: all\n"
             "    quantum: 1\n")
    doc = load_policy_config(write(ONE + extra))
    assert doc.root.class_index("vip", 0) == 1 and doc.root.class_index("batch", 0) == 2
    assert doc.root.class_index(None, 0) == 0 and doc.root.reachable == (0,)
    (warning,) = doc.warnings
    assert "vip, batch-all receive no requests here" in warning and "'standard'" in warning


# (document, what the error names) -- every one refused by Dynamo 1.6.1 too
REFUSED = [
    ("", "must contain a YAML mapping"),
    ("- 1\n", "must contain a YAML mapping (got a list)"),
    ("a: [1, 2\n", "is not valid YAML"),
    ("router: {}\nfoo: 1\n", "unknown key(s) foo"),
    ("models: {}\n", "must define router settings, a root profile"),
    ("default_policy_family: x\n", "root profile must specify default_policy_family, uncached_isl_buckets"),
    (ONE + "    bogus: 1\n", "policy_classes[0]: unknown key(s) bogus"),
    (ONE.replace("quantum: 1", "quantum: 0"), "policy_classes[0].quantum: policy class 'a': quantum must be greater"),
    (ONE.replace("quantum: 1", "quantum: '4'"), "policy_classes[0].quantum: must be a whole number >= 0"),
    (ONE.replace("quantum: 1", "quantum: -1"), "policy_classes[0].quantum: must be a whole number >= 0"),
    (ONE.replace("quantum: 1", "quantum: 1.5"), "policy_classes[0].quantum: must be a whole number"),
    (ONE.replace("quantum: 1", "quantum: true"), "policy_classes[0].quantum: must be a whole number"),
    (ONE.replace("quantum: 1", "quantum: 18446744073709551616"), "policy_classes[0].quantum: must be a whole number"),
    (ONE.replace("    quantum: 1\n", ""), "policy_classes[0]: missing quantum"),
    (ONE + "    queue_policy: lcfs\n", "policy_classes[0].queue_policy: policy class 'a': queue_policy must be fcfs or"),
    (ONE + "    queue_policy: FCFS\n", "policy_classes[0].queue_policy: unknown queue policy 'FCFS'"),
    (ONE + "    prefill_busy_threshold_frac: -1\n", "prefill_busy_threshold_frac must be finite and non-negative"),
    (ONE + "    prefill_busy_threshold_frac: .nan\n", "prefill_busy_threshold_frac must be finite and non-negative"),
    (ONE + "    prefill_busy_threshold_frac: '0.5'\n", "policy_classes[0].prefill_busy_threshold_frac: must be a number"),
    (ONE + "    prefill_busy_threshold: 2.5\n", "policy_classes[0].prefill_busy_threshold: must be a whole number"),
    (ONE + "    request_queue_limit_per_worker: 1.0\n", "request_queue_limit_per_worker: must be a whole number"),
    (ONE + "    busy_worker_ratio: 0.5\n", "unknown key(s) busy_worker_ratio"),  # later Dynamo's, not 1.6.1's
    (ONE.replace("    cache_bucket: all\n", ""), "must specify both policy_family and cache_bucket or neither"),
    (ONE.replace("min_tokens: 0", "min_tokens: 1"), "uncached_isl_buckets[0].min_tokens: uncached_isl_buckets must "
                                                     "start at min_tokens 0"),
    (ONE.replace("bucket: all\npolicy", "bucket: all\n  - min_tokens: 0\n    bucket: b\npolicy"),
     "uncached_isl_buckets[1].min_tokens: uncached_isl_buckets min_tokens must be strictly increasing"),
    (ONE.replace("bucket: all\npolicy", "bucket: all\n  - min_tokens: 5\n    bucket: all\npolicy"),
     "duplicate cache bucket 'all'"),
    (ONE.replace("min_tokens: 0", "min_tokens: -1"), "uncached_isl_buckets[0].min_tokens: must be a whole number"),
    ("default_policy_family: s\nuncached_isl_buckets: []\npolicy_classes: []\n", "policy_classes: must not be empty"),
    (ONE.replace("  - min_tokens: 0\n    bucket: all\n", "  []\n").replace(":\n  []", ": []"),
     "uncached_isl_buckets: must not be empty"),
    (ONE + "  - name: a\n    quantum: 1\n", "policy_classes[1].name: duplicate policy class 'a'"),
    (ONE.replace("bucket: all\npolicy", "bucket: all\n  - min_tokens: 10\n    bucket: big\npolicy"),
     "missing a policy class for family 'standard' and bucket 'big'"),
    (ONE.replace("cache_bucket: all", "cache_bucket: nope"), "references unknown cache bucket 'nope'"),
    (ONE.replace("family: standard\nunc", "family: other\nunc"), "default_policy_family 'other' does not name a "
                                                                   "configured family"),
    (ONE.replace("name: a", "name: 'a b'"), "policy_classes[0].name: policy class name 'a b' must match"),
    (ONE.replace("name: a", "name: ''"), "policy class name '' must match [A-Za-z0-9_.-]+"),
    (ONE + "  - name: standard\n    quantum: 1\n", "explicit policy class 'standard' collides with a policy family"),
    (ONE + "  - name: b\n    policy_family: standard\n    cache_bucket: all\n    quantum: 1\n",
     "duplicate policy classes for family 'standard' and bucket 'all'"),
    ("models:\n  '':\n" + textwrap.indent(ONE, "    "), "models: model profile name must not be empty"),
    ("models:\n  m1:\n    default_policy_family: x\n", "models.m1: missing policy_classes"),
    ("models:\n  m1:\n" + textwrap.indent(ONE.replace("quantum: 1", "quantum: 0"), "    "),
     "models.m1.policy_classes[0].quantum"),
    ("models:\n  m1:\n" + textwrap.indent(ONE + "extra: 1\n", "    "), "models.m1: unknown key(s) extra"),
    ("models: []\n", "models: must be a YAML mapping (got a list)"),
    ("models: null\n" + ONE, "models: must be a YAML mapping (got empty (null))"),
    ("worker_selection: {}\n", "worker_selection: must define an instance or an aggregated"),
    ("worker_selection:\n  aggregated: missing\n", "worker_selection.aggregated: 'missing' does not name"),
    ("worker_selection:\n  foo: a\n", "worker_selection: unknown key(s) foo"),
    ("worker_selection:\n  instances:\n    - name: default\n      type: x\n", "'default' is reserved"),
    ("worker_selection:\n  instances:\n    - name: a\n      type: x\n      parameters: [1]\n",
     "worker_selection.instances[0].parameters: must be a YAML mapping"),
    ("worker_selection:\n  instances:\n    - {name: a, type: x}\n    - {name: a, type: y}\n", "duplicate instance 'a'"),
    ("request_classifier: {}\n", "request_classifier: missing type"),
    ("request_classifier:\n  type: x\n  foo: 1\n", "request_classifier: unknown key(s) foo"),
    ("request_classifier:\n  type: x\n  parameters: [1]\n", "request_classifier.parameters: must be a YAML mapping"),
]


@pytest.mark.parametrize("document, problem", REFUSED, ids=[p for _, p in REFUSED])
def test_what_dynamo_refuses_is_refused_naming_file_and_key(write, document, problem):
    path = write(document)
    with pytest.raises(ValueError) as exc:
        load_policy_config(path)
    assert str(exc.value).startswith(f"--router-policy-config {path}: ") and problem in str(exc.value)


ACCEPTED = ["router: {}\n", "router:\n  use_kv_events: false\n", "router: null\n" + ONE, ONE + "models: {}\n",
            ONE.replace("name: a", "name: 5"),  # Dynamo reads a number where a name is expected as its text
            ONE + "    prefill_busy_threshold_frac: 2\n    request_queue_limit_per_worker: 0\n",
            "models:\n  5:\n" + textwrap.indent(ONE, "    "), "worker_selection:\n  encode: default\n",
            "worker_selection:\n  aggregated: ex\n  instances:\n    - name: ex\n      type: example\n",
            "request_classifier:\n  type: thunderagent\n  parameters: {a: 1}\n"]


@pytest.mark.parametrize("document", ACCEPTED)
def test_what_dynamo_accepts_is_accepted(write, document):
    load_policy_config(write(document))


def test_a_file_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(ValueError, match="--router-policy-config .*missing.yaml: cannot be read"):
        load_policy_config(str(tmp_path / "missing.yaml"))


def test_router_settings_map_onto_ours_with_dynamos_types_and_our_flags_bounds(write):
    doc = load_policy_config(write("router:\n  host_cache_hit_weight: 0.5\n  disk_cache_hit_weight: 0\n"
                                   "  use_kv_events: false\n  router_ttl_secs: 30\n"
                                   "  router_approximate_cache_policy: lru\n  router_track_output_blocks: false\n"))
    assert doc.router == {"router_host_cache_hit_weight": 0.5, "router_disk_cache_hit_weight": 0.0,
                          "use_kv_events": False, "router_ttl_secs": 30.0,
                          "router_approximate_cache_policy": "lru", "router_track_output_blocks": False}
    assert isinstance(doc.router["router_ttl_secs"], float)  # an integer reads as the float it sets
    assert {s.field for s in ROUTER_SETTINGS.values() if s.field} == {
        "router_host_cache_hit_weight", "router_disk_cache_hit_weight", "use_kv_events", "router_replica_sync",
        "router_track_active_blocks", "router_track_output_blocks", "router_assume_kv_reuse",
        "router_track_prefill_tokens", "router_ttl_secs", "router_approximate_cache_policy"}


@pytest.mark.parametrize("setting, problem", [
    ("foo: 1", "router: unknown key(s) foo"),
    ("host_cache_hit_weight: true", "router.host_cache_hit_weight: must be a number (got a boolean"),
    ("router_ttl_secs: abc", "router.router_ttl_secs: must be a number"),
    ("use_kv_events: 1", "router.use_kv_events: must be true or false"),
    ("use_kv_events: 'true'", "router.use_kv_events: must be true or false"),
    ("router_event_threads: 2.0", "router.router_event_threads: must be a whole number"),
    ("router_ttl_secs: null", "router.router_ttl_secs: must be a number"),
    ("router_approximate_cache_policy: bogus", "router.router_approximate_cache_policy: must be one of ttl, lru"),
    ("shared_cache_type: bogus", "must be one of none, hicache"),
    ("router_tracking_hash: bogus", "must be one of public-xxh3-v1, keyed-xxh3-v1"),
    ("router_prefill_load_model: bogus", "must be one of none, aic, ais"),
    ("host_cache_hit_weight: 2", "router.host_cache_hit_weight: must be between 0 and 1"),
    ("router_ttl_secs: -1", "router.router_ttl_secs: must be finite and > 0"),
    ("router_event_threads: 0", "router.router_event_threads: must be >= 1"),
    ("[1]", "router: must be a YAML mapping (got a list)"),
])
def test_router_settings_dynamo_refuses(write, setting, problem):
    with pytest.raises(ValueError) as exc:
        load_policy_config(write(f"router:\n  {setting}\n" if ":" in setting else f"router: {setting}\n"))
    assert str(exc.value).startswith("--router-policy-config ") and problem in str(exc.value)


def test_settings_not_acted_on_warn_as_their_flags_do(write):
    doc = load_policy_config(write("router:\n  serve_indexer: true\n  router_event_threads: 8\n"
                                   "  router_predicted_ttl_secs: 5\n  use_remote_indexer: false\n"
                                   "  shared_cache_type: none\n  router_tracking_key_file: null\n"))
    assert doc.router == {}
    assert [w.split(" in ")[0] for w in doc.warnings] == ["router.serve_indexer", "router.router_event_threads",
                                                         "router.router_predicted_ttl_secs"]
    assert "the KV indexer is not exposed on the request plane" in doc.warnings[0]  # --serve-indexer's reason
    assert all("accepted for compatibility with NVIDIA Dynamo and has no effect" in w for w in doc.warnings)


def test_plugins_are_accepted_with_a_warning(write):
    doc = load_policy_config(write("worker_selection:\n  decode: default\nrequest_classifier:\n  type: x\n"))
    assert [w.split(" in ")[0] for w in doc.warnings] == ["worker_selection", "request_classifier"]


def test_without_kv_routing_only_the_router_section_is_read(write):
    """Dynamo's round-robin frontend starts with a profile its KV router would refuse, not with a bad `router:`."""
    doc = load_policy_config(write(ONE.replace("quantum: 1", "quantum: 0")), profiles=False)
    assert doc.root is None and "apply to --router-mode kv only" in doc.warnings[0]
    with pytest.raises(ValueError, match="router: unknown key"):
        load_policy_config(write("router: {foo: 1}\n"), profiles=False)

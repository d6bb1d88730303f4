"""`--router-policy-config` / DYN_ROUTER_POLICY_CONFIG as a router setting of the frontend and of
`python -m dynamo.router`: its `router:` section wins over the flags and `--load-aware` (as in
NVIDIA Dynamo's `apply_router_config`), it is read once, and a document Dynamo refuses stops the
process with a message naming the file and the key (argparse's exit 2, no traceback)."""

from __future__ import annotations

import os

import pytest

from dynamo.frontend.config import parse_frontend_args
from dynamo.router.__main__ import parse_args
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_router import KvRouter
from tests.router.test_policy_config import ONE, PROFILE


def frontend(*argv: str, environ: dict | None = None):
    return parse_frontend_args(["--router-mode", "kv", *argv], environ=environ or {})


def service(*argv: str, environ: dict | None = None):
    return parse_args(["--endpoint", "dynamo.backend.generate", *argv], environ=environ or {})


@pytest.fixture
def policy(tmp_path):
    def policy(text: str) -> str:
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        return str(path)

    return policy


def test_router_settings_win_over_flags_and_the_load_aware_preset(policy):
    path = policy("router:\n  use_kv_events: true\n  router_ttl_secs: 30\n  host_cache_hit_weight: 0.5\n")
    config, warnings = frontend("--load-aware", "--router-ttl-secs", "5", "--router-policy-config", path)
    assert (config.use_kv_events, config.router_ttl_secs, config.router_host_cache_hit_weight) == (True, 30.0, 0.5)
    assert config.router_kv_overlap_score_credit == 0  # the rest of the preset stands
    assert warnings == [] and config.router_policy_config == path


def test_the_variable_names_the_file_on_both_commands(policy):
    path = policy("router:\n  router_approximate_cache_policy: lru\n")
    config, _ = frontend(environ={"DYN_ROUTER_POLICY_CONFIG": path})
    assert config.router_approximate_cache_policy == "lru"
    assert service(environ={"DYN_ROUTER_POLICY_CONFIG": path})[0].router_approximate_cache_policy == "lru"


def test_a_refused_document_exits_naming_the_file_and_key(policy, capsys):
    path = policy(ONE.replace("quantum: 1", "quantum: 0"))
    for parse in (frontend, service):
        with pytest.raises(SystemExit) as exc:
            parse("--router-policy-config", path)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "Traceback" not in err
        assert f"--router-policy-config {path}: policy_classes[0].quantum" in err


def test_missing_file_exits(tmp_path, capsys):
    with pytest.raises(SystemExit):
        frontend("--router-policy-config", str(tmp_path / "nope.yaml"))
    assert "nope.yaml: cannot be read" in capsys.readouterr().err


def test_settings_not_acted_on_reach_the_start_up_warnings(policy):
    path = policy("router:\n  serve_indexer: true\nworker_selection:\n  decode: default\n")
    for parse in (frontend, service):
        _, warnings = parse("--router-policy-config", path)
        assert [w.split(" in ")[0] for w in warnings] == ["router.serve_indexer", "worker_selection"]


def test_round_robin_reads_only_the_router_section(policy):
    path = policy("router:\n  router_ttl_secs: 9\n" + ONE.replace("quantum: 1", "quantum: 0"))
    config, warnings = parse_frontend_args(["--router-policy-config", path], environ={})
    assert config.router_ttl_secs == 9 and "apply to --router-mode kv only" in warnings[0]


def test_read_once_at_start(policy):
    path = policy("router:\n  router_ttl_secs: 30\n")
    config, _ = frontend("--router-policy-config", path)
    os.remove(path)  # every router the frontend builds later re-validates its config: the file is not read again
    assert KvRouter(16, config).config.router_ttl_secs == 30


def test_class_thresholds_need_the_router_queue(policy, capsys):
    with pytest.raises(SystemExit):
        frontend("--router-policy-config", policy(PROFILE), "--router-queue-max-requests", "0")
    assert "busy thresholds queue requests: it needs --router-queue-max-requests > 0" in capsys.readouterr().err
    config, _ = frontend("--router-policy-config", policy(ONE), "--router-queue-max-requests", "0")
    assert config.router_queue_max_requests == 0  # no class queues: nothing to refuse


def test_a_plain_config_has_no_document():
    config = KvRouterConfig()
    config.validate()
    assert config.policy_document() is None and config.policy_warnings() == []


def test_the_queue_flags_a_profile_replaces_are_named(policy):
    _, warnings = frontend("--router-queue-threshold", "0.5", "--router-policy-config", policy(ONE))
    assert warnings == ["--router-queue-threshold applies to no model with a policy profile in --router-policy-config "
                        f"{policy(ONE)} (every model): its classes replace them, as in Dynamo"]

"""NVIDIA Dynamo's router flags on ours (router/compat_flags.py): a manifest's standalone router
component written for Dynamo's image must not stop `python -m dynamo.router`. Every flag of Dynamo
1.6.1's `python -m dynamo.router --help` (the list below, as printed by the anchor install with an
etcd running, scripts/install_anchor_dynamo.sh) is a setting of ours or accepted with a warning."""

from __future__ import annotations

import pytest

from dynamo.router.compat_flags import ROUTER_SERVICE_FLAGS
from dynamo.router.service import RouterServiceConfig
from dynamo.runtime.compat_args import known_flags, parse_with_compat

DYNAMO_161_ROUTER_FLAGS = (
    "--ais-attention-dp-size", "--ais-backend", "--ais-backend-version", "--ais-model-path", "--ais-moe-ep-size",
    "--ais-moe-tp-size", "--ais-mtp-seed", "--ais-nextn", "--ais-nextn-accept-rates", "--ais-perf-config",
    "--ais-system", "--ais-tp-size", "--assume-kv-reuse", "--enable-session-prefix-index", "--endpoint",
    "--kv-events", "--load-aware", "--no-assume-kv-reuse", "--no-enable-session-prefix-index", "--no-kv-events",
    "--no-load-aware", "--no-router-assume-kv-reuse", "--no-router-conditional-disagg", "--no-router-kv-events",
    "--no-router-replica-sync", "--no-router-track-active-blocks", "--no-router-track-output-blocks",
    "--no-router-track-prefill-tokens", "--no-serve-indexer", "--no-track-active-blocks", "--no-track-output-blocks",
    "--no-use-remote-indexer", "--router-approximate-cache-policy", "--router-assume-kv-reuse", "--router-block-size",
    "--router-conditional-disagg", "--router-conditional-disagg-config", "--router-decode-active-request-weight",
    "--router-decode-policy", "--router-disk-cache-hit-weight", "--router-event-threads",
    "--router-host-cache-hit-weight", "--router-kv-events", "--router-kv-overlap-score-credit",
    "--router-kv-overlap-score-credit-decay", "--router-policy-config", "--router-predicted-ttl-secs",
    "--router-prefill-load-model", "--router-prefill-load-scale", "--router-prefill-policy", "--router-queue-policy",
    "--router-queue-threshold", "--router-replica-sync", "--router-temperature", "--router-track-active-blocks",
    "--router-track-output-blocks", "--router-track-prefill-tokens", "--router-tracking-hash",
    "--router-tracking-key-file", "--router-tracking-key-id", "--router-ttl-secs", "--serve-indexer",
    "--shared-cache-multiplier", "--shared-cache-type", "--track-active-blocks", "--track-output-blocks",
    "--use-remote-indexer", "-h",
)
ENDPOINT = ("--endpoint", "dynamo.backend.generate")


def parse(*argv: str):
    return parse_with_compat(RouterServiceConfig, ROUTER_SERVICE_FLAGS, [*ENDPOINT, *argv],
                             prog="python -m dynamo.router", environ={})


def test_every_dynamo_router_flag_is_known_here():
    ours = known_flags(RouterServiceConfig, ROUTER_SERVICE_FLAGS)
    assert [f for f in DYNAMO_161_ROUTER_FLAGS if f not in ours] == []


def test_flags_we_implement_take_effect_and_say_nothing():
    config, warnings = parse("--router-block-size", "32", "--no-router-kv-events", "--router-queue-policy", "wspt",
                             "--track-output-blocks", "--router-kv-overlap-score-credit", "0.5",
                             "--router-prefill-load-scale", "2", "--router-decode-active-request-weight", "1.5",
                             "--router-kv-overlap-score-credit-decay", "1")
    assert (config.router_block_size, config.use_kv_events, config.router_queue_policy) == (32, False, "wspt")
    assert (config.router_kv_overlap_score_credit, config.router_prefill_load_scale,
            config.router_decode_active_request_weight, config.router_kv_overlap_score_credit_decay) == (0.5, 2, 1.5, 1)
    assert config.router_track_output_blocks is True and warnings == []


def test_load_aware_is_dynamos_preset():
    config, warnings = parse("--load-aware")
    assert warnings == [] and config.mode == "load-only"
    assert (config.router_kv_overlap_score_credit, config.use_kv_events, config.router_assume_kv_reuse) == (0, False,
                                                                                                           False)
    assert config.router_track_active_blocks and config.router_track_prefill_tokens


@pytest.mark.parametrize("flag", ["--router-kv-overlap-score-credit", "--router-prefill-load-scale",
                                  "--router-decode-active-request-weight", "--router-kv-overlap-score-credit-decay"])
def test_cost_knobs_must_be_finite_and_not_negative(flag, capsys):
    for bad in ("-1", "inf"):
        with pytest.raises(SystemExit):
            parse(flag, bad)
        assert "finite and >= 0" in capsys.readouterr().err


def test_flags_without_effect_are_accepted_with_a_warning_each():
    config, warnings = parse("--serve-indexer", "--router-prefill-load-model", "ais", "--router-conditional-disagg",
                             "--router-temperature", "0.5")
    assert config.router_temperature == 0.5  # the flags after them still parse
    assert len(warnings) == 3 and all("has no effect" in w for w in warnings)
    assert any(w.startswith("--router-conditional-disagg") and "the frontend decides" in w for w in warnings)
    assert parse("--no-load-aware", "--no-serve-indexer")[1] == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("--version")
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("dynamo ")


def test_the_endpoint_comes_from_dynamos_variable_too():
    config, _ = parse_with_compat(RouterServiceConfig, ROUTER_SERVICE_FLAGS, [], prog="python -m dynamo.router",
                                  environ={"DYN_ROUTER_ENDPOINT": "team.prefill.generate"})
    assert config.endpoint == "team.prefill.generate"


def test_router_policy_config_is_a_setting_here(tmp_path):
    """Once accepted and ignored; now read (router/policy_config.py): no warning, and it takes effect."""
    path = tmp_path / "policy.yaml"
    path.write_text("router:\n  router_ttl_secs: 7\n")
    config, warnings = parse("--router-policy-config", str(path), "--no-router-kv-events")
    assert (config.router_policy_config, config.router_ttl_secs, warnings) == (str(path), 7.0, [])

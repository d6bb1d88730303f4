"""NVIDIA Dynamo's frontend flags on ours (frontend/compat_flags.py): a manifest written for Dynamo's
image must not stop this frontend. Every flag of Dynamo 1.6.1's `python -m dynamo.frontend --help`
(the list below, as printed by the anchor install, scripts/install_anchor_dynamo.sh) is either a
setting of ours, accepted with a warning saying it has no effect, or refused when ignoring it would
drop transport security."""

from __future__ import annotations

import pytest

from dynamo.frontend.compat_flags import FRONTEND_FLAGS
from dynamo.frontend.config import FrontendConfig, parse_frontend_args
from dynamo.runtime.compat_args import known_flags

DYNAMO_161_FRONTEND_FLAGS = (
    "--active-decode-blocks-threshold", "--active-prefill-tokens-threshold",
    "--active-prefill-tokens-threshold-frac", "--aic-attention-dp-size", "--aic-backend", "--aic-backend-version",
    "--aic-model-path", "--aic-moe-ep-size", "--aic-moe-tp-size", "--aic-mtp-seed", "--aic-nextn",
    "--aic-nextn-accept-rates", "--aic-system", "--aic-tp-size", "--ais-attention-dp-size", "--ais-backend",
    "--ais-backend-version", "--ais-model-path", "--ais-moe-ep-size", "--ais-moe-tp-size", "--ais-mtp-seed",
    "--ais-nextn", "--ais-nextn-accept-rates", "--ais-perf-config", "--ais-system", "--ais-tp-size",
    "--assume-kv-reuse", "--discovery-backend", "--dump-config-to", "--dyn-chat-processor", "--dyn-debug-perf",
    "--dyn-preprocess-workers", "--enable-anthropic-api", "--enable-session-prefix-index",
    "--enable-streaming-reasoning-dispatch", "--enable-streaming-tool-dispatch", "--enforce-disagg", "--event-plane",
    "--exclude-tools-when-tool-choice-none", "--frontend-route-extension", "--grpc-metrics-port", "--http-host",
    "--http-port", "--interactive", "--kserve-grpc-server", "--kv-cache-block-size", "--kv-events", "--load-aware",
    "--max-prefill-tokens", "--metrics-prefix", "--migration-limit", "--migration-max-seq-len", "--model-name",
    "--model-path", "--namespace", "--namespace-prefix", "--nats-tls-ca-cert-path", "--nats-tls-client-cert-path",
    "--nats-tls-client-key-path", "--nats-tls-insecure", "--no-assume-kv-reuse", "--no-dyn-debug-perf",
    "--no-enable-anthropic-api", "--no-enable-session-prefix-index", "--no-enable-streaming-reasoning-dispatch",
    "--no-enable-streaming-tool-dispatch", "--no-enforce-disagg", "--no-exclude-tools-when-tool-choice-none",
    "--no-interactive", "--no-kserve-grpc-server", "--no-kv-events", "--no-load-aware", "--no-nats-tls-insecure",
    "--no-router-assume-kv-reuse", "--no-router-conditional-disagg", "--no-router-kv-events",
    "--no-router-replica-sync", "--no-router-track-active-blocks", "--no-router-track-output-blocks",
    "--no-router-track-prefill-tokens", "--no-serve-indexer", "--no-strip-anthropic-preamble",
    "--no-tokenizer-fallback", "--no-track-active-blocks", "--no-track-output-blocks", "--no-trust-remote-code",
    "--no-use-remote-indexer", "--reasoning-field-name", "--request-plane", "--response-plane",
    "--router-approximate-cache-policy", "--router-assume-kv-reuse", "--router-conditional-disagg",
    "--router-conditional-disagg-config", "--router-decode-active-request-weight", "--router-decode-policy",
    "--router-disk-cache-hit-weight", "--router-event-threads", "--router-host-cache-hit-weight",
    "--router-kv-events", "--router-kv-overlap-score-credit", "--router-kv-overlap-score-credit-decay",
    "--router-min-initial-workers", "--router-mode", "--router-policy-config", "--router-predicted-ttl-secs",
    "--router-prefill-load-model", "--router-prefill-load-scale", "--router-prefill-policy", "--router-queue-policy",
    "--router-queue-threshold", "--router-replica-sync", "--router-session-affinity-mode",
    "--router-session-affinity-ttl-secs", "--router-temperature", "--router-track-active-blocks",
    "--router-track-output-blocks", "--router-track-prefill-tokens", "--router-tracking-hash",
    "--router-tracking-key-file", "--router-tracking-key-id", "--router-ttl-secs", "--serve-indexer",
    "--shared-cache-multiplier", "--shared-cache-type", "--strip-anthropic-preamble", "--tcp-tls-ca-cert-path",
    "--tcp-tls-cert-path", "--tcp-tls-client-ca-cert-path", "--tcp-tls-client-cert-path",
    "--tcp-tls-client-key-path", "--tcp-tls-key-path", "--tls-cert-path", "--tls-client-ca-cert-path",
    "--tls-key-path", "--tokenizer", "--tokenizer-fallback", "--track-active-blocks", "--track-output-blocks",
    "--trust-remote-code", "--use-remote-indexer", "--version",
)


def test_every_dynamo_frontend_flag_is_known_here():
    ours = known_flags(FrontendConfig, FRONTEND_FLAGS)
    assert [f for f in DYNAMO_161_FRONTEND_FLAGS if f not in ours] == []


def test_flags_we_implement_take_effect_and_say_nothing():
    config, warnings = parse_frontend_args(["--namespace-prefix", "team-", "--migration-max-seq-len", "8192",
                                            "--assume-kv-reuse", "--no-track-output-blocks", "--router-mode",
                                            "least-loaded"], environ={})
    assert (config.namespace_prefix, config.migration_max_seq_len, config.router_mode) == ("team-", 8192,
                                                                                           "least-loaded")
    assert config.router_assume_kv_reuse is True and config.router_track_output_blocks is False
    assert warnings == []


def test_flags_without_effect_are_accepted_with_a_warning_each():
    config, warnings = parse_frontend_args(["--trust-remote-code", "--router-event-threads", "4",
                                            "-i", "--aic-backend", "vllm", "--dyn-chat-processor", "vllm",
                                            "--router-mode", "kv"], environ={})
    assert config.router_mode == "kv"  # the flags after them still parse
    assert len(warnings) == 5 and all("has no effect" in w for w in warnings)
    assert any(w.startswith("--trust-remote-code") and "no model code is run" in w for w in warnings)


def test_router_policy_config_is_a_setting_here(tmp_path):
    """Once accepted and ignored; now read (router/policy_config.py): no warning, and it takes effect."""
    path = tmp_path / "policy.yaml"
    path.write_text("router:\n  host_cache_hit_weight: 0.5\n")
    config, warnings = parse_frontend_args(["--router-mode", "kv", "--router-policy-config", str(path)], environ={})
    assert (config.router_policy_config, config.router_host_cache_hit_weight, warnings) == (str(path), 0.5, [])


def test_flags_of_newer_dynamo_recipes():
    """Frontend flags that NVIDIA's own recipes pass (after 1.6.1): its JetStream router state, which
    this router does not keep, and the decode-fallback switch, which is our --enforce-disagg inverted."""
    config, warnings = parse_frontend_args(["--router-mode", "kv", "--router-reset-states", "--router-snapshot-threshold",
                                            "1000", "--router-durable-kv-events"], environ={})
    assert config.router_mode == "kv" and len(warnings) == 3
    assert all("has no effect" in w and "asks each worker" in w for w in warnings)
    assert parse_frontend_args([], environ={})[0].decode_fallback is True
    assert parse_frontend_args(["--no-decode-fallback"], environ={}) == (FrontendConfig(decode_fallback=False), [])
    assert parse_frontend_args([], environ={"DYN_DECODE_FALLBACK": "false"})[0].decode_fallback is False


def test_load_aware_implies_kv_routing_as_in_dynamo():
    config, warnings = parse_frontend_args(["--load-aware"], environ={})
    assert (config.router_mode, config.mode, warnings) == ("kv", "load-only", [])


def test_turning_off_what_is_not_served_needs_no_warning():
    assert parse_frontend_args(["--no-enable-anthropic-api", "--no-trust-remote-code"], environ={})[1] == []


def test_transport_security_flags_set_their_variables_without_warning(isolated_environ):
    import os

    for name in ("DYN_TCP_TLS_CA_CERT_PATH", "NATS_TLS_CA_CERT_PATH", "NATS_TLS_INSECURE"):
        isolated_environ.pop(name, None)
    _, warnings = parse_frontend_args(["--tcp-tls-ca-cert-path", "/etc/tls/ca.pem", "--nats-tls-ca-cert-path",
                                       "/etc/tls/nats-ca.pem", "--no-nats-tls-insecure"], environ={})
    assert warnings == []
    assert os.environ["DYN_TCP_TLS_CA_CERT_PATH"] == "/etc/tls/ca.pem"
    assert os.environ["NATS_TLS_CA_CERT_PATH"] == "/etc/tls/nats-ca.pem" and os.environ["NATS_TLS_INSECURE"] == "false"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_frontend_args(["--version"], environ={})
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("dynamo ")


def test_mutual_tls_needs_the_servers_certificate(capsys):
    with pytest.raises(SystemExit):
        parse_frontend_args(["--tls-client-ca-cert-path", "ca.pem"], environ={})
    assert "needs --tls-cert-path" in capsys.readouterr().err


def test_the_tokenizer_cache_budget_comes_from_dynamos_variable(capsys):
    assert parse_frontend_args([], environ={})[0].tokenizer_cache_bytes == 128 << 20
    assert parse_frontend_args([], environ={"DYN_TOKENIZER_CACHE_BYTES": "0"})[0].tokenizer_cache_bytes == 0
    assert parse_frontend_args(["--tokenizer-cache-bytes", "4096"], environ={})[0].tokenizer_cache_bytes == 4096
    with pytest.raises(SystemExit):
        parse_frontend_args(["--tokenizer-cache-bytes", "-1"], environ={})
    assert "--tokenizer-cache-bytes" in capsys.readouterr().err


def test_the_agent_controller_flag_of_newer_dynamo_is_accepted():
    """Dynamo's SGLang agent guide launches the frontend with --enable-agent-controller (after 1.6.1)."""
    config, warnings = parse_frontend_args(["--router-mode", "kv", "--enable-agent-controller"], environ={})
    assert config.router_mode == "kv" and len(warnings) == 1 and "session_control is always on" in warnings[0]


def test_a_nats_request_plane_is_accepted_with_a_warning_as_ours_is_always_tcp():
    """Dynamo's recipes pass `--request-plane nats` (or DYN_REQUEST_PLANE=nats) to every component."""
    for argv, environ in ((["--request-plane", "nats"], {}), ([], {"DYN_REQUEST_PLANE": "nats"})):
        config, warnings = parse_frontend_args(argv, environ=environ)
        assert config.request_plane == "nats" and len(warnings) == 1 and "always travel over TCP" in warnings[0]
    assert parse_frontend_args(["--request-plane", "tcp"], environ={})[1] == []


def test_a_vllm_chat_processor_frontend_takes_vllm_engine_arguments_with_a_warning():
    argv = ["--dyn-chat-processor", "vllm", "--tool-call-parser", "hermes", "--model", "Qwen/Qwen3-0.6B",
            "--max-model-len", "4096",
            "--enable-prefix-caching", "--http-port", "8123", "--gpu-memory-utilization=0.9"]
    config, warnings = parse_frontend_args(argv, {})
    assert (config.http_port, config.tool_call_parser) == (8123, "hermes")
    engine = [w for w in warnings if "vLLM engine arguments" in w]
    assert engine and all(f in engine[0] for f in ("--model", "--max-model-len", "--enable-prefix-caching",
                                                   "--gpu-memory-utilization"))
    # The same through Dynamo's variable for the processor.
    config, warnings = parse_frontend_args(["--max-model-len", "4096"], {"DYN_CHAT_PROCESSOR": "vllm"})
    assert any("--max-model-len" in w for w in warnings)


def test_engine_arguments_are_removed_where_they_stand_whatever_value_repeats():
    # The port and the engine's length share a value, before and after the engine's flags.
    for argv in (["--dyn-chat-processor", "vllm", "--served-model-name", "x", "--max-model-len", "4096",
                  "--http-port", "4096"],
                 ["--http-port", "4096", "--dyn-chat-processor=vllm", "--max-model-len", "4096"]):
        config, warnings = parse_frontend_args(argv, {})
        assert config.http_port == 4096 and any("--max-model-len" in w for w in warnings)
    # What the engine's parser leaves (here an abbreviated flag of ours, which the full parse takes)
    # holds the same value as an engine argument: that value is the engine's only where it stands.
    config, warnings = parse_frontend_args(["--dyn-chat-processor", "vllm", "--max-model-len", "4096",
                                            "--http-po", "4096"], {})
    assert config.http_port == 4096 and any("--max-model-len" in w for w in warnings)


def test_the_chat_processor_flag_wins_over_its_variable():
    with pytest.raises(SystemExit):  # the flag says dynamo: the engine's argument is refused
        parse_frontend_args(["--dyn-chat-processor", "dynamo", "--max-model-len", "4096"],
                            {"DYN_CHAT_PROCESSOR": "vllm"})
    config, warnings = parse_frontend_args(["--dyn-chat-processor", "vllm", "--max-model-len", "4096"],
                                           {"DYN_CHAT_PROCESSOR": "dynamo"})
    assert any("--max-model-len" in w for w in warnings)


def test_help_and_bad_values_are_answered_by_the_frontends_own_parse_alone(capsys):
    with pytest.raises(SystemExit) as exit_help:
        parse_frontend_args(["--dyn-chat-processor", "vllm", "--max-model-len", "4096", "--help"], {})
    out = capsys.readouterr().out
    assert exit_help.value.code == 0 and out.startswith("usage: python -m dynamo.frontend") and out.count("usage:") == 1
    with pytest.raises(SystemExit):
        parse_frontend_args(["--dyn-chat-processor", "vllm", "--max-model-len", "4096", "--http-port", "x"], {})
    assert capsys.readouterr().err.startswith("usage: python -m dynamo.frontend")


def test_help_lists_the_transport_security_switches_with_what_they_do(capsys):
    with pytest.raises(SystemExit):
        parse_frontend_args(["--help"], {})
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help text
    assert "--tcp-tls-insecure Call workers over TLS without verifying them (development only) [env" in out
    assert "--nats-tls-insecure TLS to NATS without verifying the server" in out
    assert "--tcp-tls-ca-cert-path VALUE" in out and "--no-tcp-tls-insecure" not in out


@pytest.mark.parametrize("argv", [
    ["--max-model-len", "4096"],  # the default processor: Dynamo refuses unknown flags too
    ["--dyn-chat-processor", "vllm", "--not-a-vllm-flag", "1"],
    ["--dyn-chat-processor", "sglang", "--max-model-len", "4096"],
])
def test_other_unknown_flags_are_still_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse_frontend_args(argv, {})
    assert "unrecognized arguments" in capsys.readouterr().err


def test_admission_control_is_accepted_and_ignored_as_in_dynamo_161(capsys):
    """Dynamo 1.6.1 removed admission control but still starts with the flag (a warning), and warns for
    its variable: a launch command written for it must start here too."""
    config, warnings = parse_frontend_args(["--admission-control", "token-capacity", "--router-mode", "kv"],
                                           environ={})
    assert config.router_mode == "kv" and len(warnings) == 1
    assert warnings[0].startswith("--admission-control") and "--active-decode-blocks-threshold" in warnings[0]
    config, warnings = parse_frontend_args([], environ={"DYN_ADMISSION_CONTROL": "token-capacity"})
    assert config == FrontendConfig() and len(warnings) == 1
    assert warnings[0].startswith("DYN_ADMISSION_CONTROL") and "DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD" in warnings[0]
    with pytest.raises(SystemExit) as exc:  # Dynamo's choices: token-capacity, none
        parse_frontend_args(["--admission-control", "bogus"], environ={})
    assert exc.value.code == 2 and "--admission-control: invalid choice: 'bogus'" in capsys.readouterr().err

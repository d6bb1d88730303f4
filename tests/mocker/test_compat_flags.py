"""NVIDIA Dynamo's mocker flags on ours (mocker/compat_flags.py): every flag of Dynamo 1.6.1's
`python -m dynamo.mocker --help` (the list below, as printed by the anchor install) is a setting of
ours or accepted with a warning; `--num-workers` above 1 is refused. The ones ours implements
take effect: `--event-plane`, `--max-model-len`, `--decode-speedup-ratio`."""

from __future__ import annotations

import pytest

from dynamo.mocker.args import MockerArgs
from dynamo.mocker.compat_flags import MOCKER_FLAGS, parse_mocker_args
from dynamo.mocker.timing import TimingModel, decode_ms, prefill_ms
from dynamo.runtime.compat_args import known_flags

DYNAMO_161_MOCKER_FLAGS = (
    "--active-decode-blocks-threshold", "--active-prefill-tokens-threshold",
    "--active-prefill-tokens-threshold-frac", "--aic-attention-dp-size", "--aic-backend", "--aic-backend-version",
    "--aic-moe-ep-size", "--aic-moe-tp-size", "--aic-mtp-seed", "--aic-nextn", "--aic-nextn-accept-rates",
    "--aic-perf-model", "--aic-system", "--aic-tp-size", "--ais-attention-dp-size", "--ais-backend",
    "--ais-backend-version", "--ais-moe-ep-size", "--ais-moe-tp-size", "--ais-mtp-seed", "--ais-nextn",
    "--ais-nextn-accept-rates", "--ais-perf-config", "--ais-perf-model", "--ais-system", "--ais-tp-size",
    "--assume-kv-reuse", "--block-size", "--bootstrap-ports", "--data-parallel-size", "--decode-speedup-ratio",
    "--disaggregation-mode", "--discovery-backend", "--enable-chunked-prefill", "--enable-prefix-caching",
    "--enable-session-prefix-index", "--endpoint", "--engine-type", "--event-plane", "--extra-engine-args",
    "--free-gpu-memory-fraction", "--gpu-memory-utilization", "--host-offload-d2h-bandwidth-gbps",
    "--host-offload-h2d-bandwidth-gbps", "--is-decode-worker", "--is-prefill-worker", "--kv-bytes-per-token",
    "--kv-cache-dtype", "--kv-events", "--kv-transfer-bandwidth", "--kv-transfer-timing-mode", "--load-aware",
    "--max-model-len", "--max-num-batched-tokens", "--max-num-seqs", "--mem-fraction-static", "--model-name",
    "--model-path", "--no-assume-kv-reuse", "--no-enable-chunked-prefill", "--no-enable-prefix-caching",
    "--no-enable-session-prefix-index", "--no-kv-events", "--no-load-aware", "--no-router-assume-kv-reuse",
    "--no-router-conditional-disagg", "--no-router-kv-events", "--no-router-replica-sync",
    "--no-router-track-active-blocks", "--no-router-track-output-blocks", "--no-router-track-prefill-tokens",
    "--no-track-active-blocks", "--no-track-output-blocks", "--no-use-remote-indexer", "--num-gpu-blocks-override",
    "--num-host-blocks", "--num-workers", "--planner-profile-data", "--preemption-mode", "--reasoning",
    "--request-plane", "--response-plane", "--response-replay-trace-path", "--router-approximate-cache-policy",
    "--router-assume-kv-reuse", "--router-conditional-disagg", "--router-conditional-disagg-config",
    "--router-decode-active-request-weight", "--router-decode-policy", "--router-disk-cache-hit-weight",
    "--router-event-threads", "--router-host-cache-hit-weight", "--router-kv-events",
    "--router-kv-overlap-score-credit", "--router-kv-overlap-score-credit-decay", "--router-mode",
    "--router-policy-config", "--router-predicted-ttl-secs", "--router-prefill-load-model",
    "--router-prefill-load-scale", "--router-prefill-policy", "--router-queue-policy", "--router-queue-threshold",
    "--router-replica-sync", "--router-session-affinity-mode", "--router-session-affinity-ttl-secs",
    "--router-temperature", "--router-track-active-blocks", "--router-track-output-blocks",
    "--router-track-prefill-tokens", "--router-tracking-hash", "--router-tracking-key-file",
    "--router-tracking-key-id", "--router-ttl-secs", "--sglang-chunked-prefill-size", "--sglang-clip-max-new-tokens",
    "--sglang-generate", "--sglang-max-prefill-tokens", "--sglang-page-size", "--sglang-schedule-conservativeness",
    "--sglang-schedule-policy", "--shared-cache-multiplier", "--shared-cache-type", "--speedup-ratio",
    "--stagger-delay", "--startup-time", "--track-active-blocks", "--track-output-blocks",
    "--trtllm-capacity-scheduler-policy", "--use-remote-indexer", "--version", "--zmq-kv-events-ports",
    "--zmq-replay-ports",
)


def test_every_dynamo_mocker_flag_is_known_here():
    ours = known_flags(MockerArgs, MOCKER_FLAGS)
    assert [f for f in DYNAMO_161_MOCKER_FLAGS if f not in ours] == []


def test_flags_we_implement_take_effect_and_say_nothing():
    args, warnings = parse_mocker_args(["--model-path", "m", "--event-plane", "nats", "--max-model-len", "4096",
                                        "--decode-speedup-ratio", "2", "--num-workers", "1"], environ={})
    assert (args.event_plane, args.context_length, args.decode_speedup_ratio) == ("nats", 4096, 2.0)
    assert warnings == []


def test_router_and_other_engine_flags_are_accepted_with_a_warning_each():
    args, warnings = parse_mocker_args(["--model-path", "m", "--router-mode", "kv", "--router-temperature", "0.5",
                                        "--sglang-generate", "--aic-backend", "vllm", "--kv-cache-dtype", "fp8",
                                        "--speedup-ratio", "7"], environ={})
    assert args.speedup_ratio == 7.0 and len(warnings) == 5
    assert any(w.startswith("--router-mode") and "does not route" in w for w in warnings)


def test_router_policy_config_stays_ignored_by_the_worker():
    """The frontend and `python -m dynamo.router` read it; a worker only accepts it, with a warning."""
    _, warnings = parse_mocker_args(["--model-path", "m", "--router-policy-config", "/etc/policy.yaml"], environ={})
    assert len(warnings) == 1 and warnings[0].startswith("--router-policy-config") and "has no effect" in warnings[0]


@pytest.mark.parametrize("workers", ["2", "16"])
def test_more_than_one_worker_per_process_is_refused(workers, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_mocker_args(["--model-path", "m", "--num-workers", workers], environ={})
    assert exc.value.code == 2 and "one worker per process" in capsys.readouterr().err


def test_decode_speedup_divides_decode_steps_only():
    plain, fast = TimingModel(speedup_ratio=1.0), TimingModel(speedup_ratio=1.0, decode_speedup_ratio=4.0)
    assert fast.step_seconds(0, True, 0.5) == pytest.approx(plain.step_seconds(0, True, 0.5) / 4)
    assert fast.step_seconds(500, False, 0.5) == plain.step_seconds(500, False, 0.5)  # prefill alone unchanged
    both = fast.step_seconds(500, True, 0.5)
    assert both == pytest.approx((prefill_ms(500) + decode_ms(0.5) / 4) / 1e3)


def test_decode_speedup_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        parse_mocker_args(["--model-path", "m", "--decode-speedup-ratio", "0"], environ={})
    assert "--decode-speedup-ratio must be > 0" in capsys.readouterr().err

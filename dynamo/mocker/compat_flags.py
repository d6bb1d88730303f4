"""The flags of NVIDIA Dynamo 1.6.1's `python -m dynamo.mocker` that ours does not act on
(runtime/compat_args.py says how such flags are handled), and the mocker's command line.

Dynamo's mocker takes its router's flags too, and knobs of engines and tiers this mocker does not
model; they are accepted with a start-up warning. `--num-workers` above 1 is refused: this mocker
runs one worker per process, and serving fewer workers than asked for is not a quiet change.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from dynamo.mocker.args import MockerArgs
from dynamo.runtime.compat_args import CompatFlags, parse_with_compat
from dynamo.worker.engine_args import migration_limit_warnings

_ROUTER = "a router setting: the mocker does not route (give it to the frontend or `python -m dynamo.router`)"
_ENGINE = "only vLLM-style scheduling is simulated here"
_MEMORY = "KV capacity is --num-gpu-blocks-override here"
_AIC = "AIConfigurator timing is not used: steps follow the polynomial model or --planner-profile-data"
_BOOL = {"--aic-perf-model", "--ais-perf-model", "--assume-kv-reuse", "--enable-session-prefix-index", "--kv-events",
         "--load-aware", "--router-assume-kv-reuse", "--router-conditional-disagg", "--router-kv-events",
         "--router-replica-sync", "--router-track-active-blocks", "--router-track-output-blocks",
         "--router-track-prefill-tokens", "--sglang-generate", "--track-active-blocks", "--track-output-blocks",
         "--use-remote-indexer"}
_WHY = {
    "--num-workers": "one worker per process here",
    "--bootstrap-ports": "disaggregated KV moves over the request plane here: no rendezvous ports",
    "--engine-type": _ENGINE, "--preemption-mode": "preemption is vLLM's (recompute, newest first)",
    "--extra-engine-args": "give the settings as flags", "--reasoning": "no simulated thinking tokens are produced",
    "--kv-events": "KV events are always published", "--kv-cache-dtype": _MEMORY,
    "--free-gpu-memory-fraction": _MEMORY, "--gpu-memory-utilization": _MEMORY, "--mem-fraction-static": _MEMORY,
    "--kv-transfer-timing-mode": "transfers take "
    "kv_bytes_per_token x tokens / --kv-transfer-bandwidth", "--request-plane": "requests always come over TCP",
    "--response-plane": "responses return over the request's own TCP stream",
    "--response-replay-trace-path": "use --replay-file", "--stagger-delay": "one worker per process here",
    "--zmq-kv-events-ports": "KV events go through the event plane", "--zmq-replay-ports": "KV events go through "
    "the event plane", "--enable-session-prefix-index": _ROUTER, "--use-remote-indexer": _ROUTER,
}
_NAMES = (
    "--active-decode-blocks-threshold", "--active-prefill-tokens-threshold", "--active-prefill-tokens-threshold-frac",
    *(f"--{p}-{n}" for p in ("aic", "ais") for n in ("attention-dp-size", "backend", "backend-version", "moe-ep-size",
                                                      "moe-tp-size", "mtp-seed", "nextn", "nextn-accept-rates",
                                                      "system", "tp-size", "perf-model")),
    "--ais-perf-config", "--assume-kv-reuse", "--load-aware", "--track-active-blocks", "--track-output-blocks",
    *(f"--router-{n}" for n in ("approximate-cache-policy", "assume-kv-reuse", "conditional-disagg",
                                "conditional-disagg-config", "decode-active-request-weight", "decode-policy",
                                "disk-cache-hit-weight", "event-threads", "host-cache-hit-weight", "kv-events",
                                "kv-overlap-score-credit", "kv-overlap-score-credit-decay", "mode", "policy-config",
                                "predicted-ttl-secs", "prefill-load-model", "prefill-load-scale", "prefill-policy",
                                "queue-policy", "queue-threshold", "replica-sync", "session-affinity-mode",
                                "session-affinity-ttl-secs", "temperature", "track-active-blocks",
                                "track-output-blocks", "track-prefill-tokens", "tracking-hash", "tracking-key-file",
                                "tracking-key-id", "ttl-secs")),
    *(f"--sglang-{n}" for n in ("chunked-prefill-size", "clip-max-new-tokens", "generate", "max-prefill-tokens",
                                "page-size", "schedule-conservativeness", "schedule-policy")),
    "--trtllm-capacity-scheduler-policy", "--shared-cache-multiplier", "--shared-cache-type", *_WHY,
)


def _why(name: str) -> str:
    if name in _WHY:
        return _WHY[name]
    if name.startswith(("--aic-", "--ais-")):
        return _AIC
    if name.startswith(("--sglang-", "--trtllm-")):
        return _ENGINE
    return _ROUTER


MOCKER_FLAGS = CompatFlags({
    **{(name,): (name not in _BOOL, _why(name)) for name in dict.fromkeys(_NAMES)},
    # Hidden in 1.6.1 (deprecated for --router-prefill-load-scale), with its older spelling as an alias.
    ("--router-kv-overlap-score-weight", "--kv-overlap-score-weight"): (True, _ROUTER),
})


def parse_mocker_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
                      ) -> tuple[MockerArgs, list[str]]:
    """(the mocker's args, a warning per Dynamo flag accepted without effect); exits 2 on a bad one."""
    args, warnings = parse_with_compat(MockerArgs, MOCKER_FLAGS, argv, prog="python -m dynamo.mocker",
                                       environ=environ, vet=_one_worker)
    kept = [w for w in warnings if not w.startswith("--num-workers ")]  # 1 is what runs
    return args, kept + migration_limit_warnings(args.migration_limit)


def _one_worker(given: dict, error) -> None:
    workers = (given.get("--num-workers") or "1").strip()
    if workers != "1":
        error(f"--num-workers {workers}: this mocker runs one worker per process; start {workers} processes "
              "(DGD replicas, or `dynamo.deploy run`, do)")

"""NVIDIA Dynamo frontend flags this frontend does not act on: the boundary between a manifest
written for Dynamo's image and what this one serves.

A manifest that passes such a flag must not stop the frontend (argparse's "unrecognized
arguments" would crash-loop the pod), and must not pass in silence either. So each flag is:
- accepted with a WARNING at start that names it and says why it has no effect here, when
  ignoring it changes no guarantee the operator relies on (tuning knobs of Dynamo's own router
  or tokenizer, features this frontend does not serve);
- refused, with a message saying so, when ignoring it would weaken security: the operator asked
  for TLS on the request plane or to NATS, and a plaintext connection is not an acceptable
  fallback.

Their `DYN_*` twins are not read: an unknown variable is ignored like any other.
"""

from __future__ import annotations

import argparse

_ROUTER = "a setting of NVIDIA Dynamo's own KV router cost model; this router's cost model does not use it"
_AIC = "AIConfigurator prefill-load model for Dynamo's router (--router-prefill-load-model aic); not used here"
_NOT_SERVED = "not served by this frontend"
# flag (first name is Dynamo's; more are its aliases) -> (takes a value, why it has no effect here)
IGNORED: dict[tuple[str, ...], tuple[bool, str]] = {
    ("--interactive", "-i"): (False, "the text chat REPL is not provided; the HTTP server starts as usual"),
    ("--kserve-grpc-server",): (False, "the KServe gRPC server is " + _NOT_SERVED),
    ("--grpc-metrics-port",): (True, "the KServe gRPC server is " + _NOT_SERVED),
    ("--enable-anthropic-api",): (False, "/v1/messages (Anthropic API) is " + _NOT_SERVED),
    ("--strip-anthropic-preamble",): (False, "/v1/messages (Anthropic API) is " + _NOT_SERVED),
    ("--enable-streaming-tool-dispatch",): (False, "the extra tool_call_dispatch SSE events are " + _NOT_SERVED),
    ("--enable-streaming-reasoning-dispatch",): (False, "the extra reasoning_dispatch SSE events are " + _NOT_SERVED),
    ("--exclude-tools-when-tool-choice-none",): (False, "tool_choice none already leaves tools out of the prompt"),
    ("--dyn-chat-processor",): (True, "templates and tokenization are always this frontend's own"),
    ("--dyn-preprocess-workers",): (True, "big prompts are preprocessed on this frontend's own thread pool"),
    ("--tokenizer",): (True, "the model's HF tokenizer is always used"),
    ("--tokenizer-fallback",): (False, "the model's HF tokenizer is always used"),
    ("--trust-remote-code",): (False, "no model code is run here: tokenizer.json and the chat template only"),
    ("--dyn-debug-perf",): (False, "per-request performance debug logs are not produced"),
    ("--frontend-route-extension",): (True, "route extensions are " + _NOT_SERVED),
    ("--response-plane",): (True, "responses always return over the request's own TCP stream"),
    ("--max-prefill-tokens",): (True, "the workers report their own batch sizes in their model cards"),
    ("--serve-indexer",): (False, "the KV indexer is not exposed on the request plane"),
    ("--use-remote-indexer",): (False, "the KV indexer always runs inside this router"),
    ("--enable-session-prefix-index",): (False, "multi-turn sessions are routed by their cached history already"),
    ("--load-aware",): (False, "Dynamo's load-aware preset; use --router-mode least-loaded or power-of-two"),
    ("--router-session-affinity-ttl-secs",): (True, "sticky sessions are " + _NOT_SERVED),
    ("--router-session-affinity-mode",): (True, "sticky sessions are " + _NOT_SERVED),
    ("--router-policy-config",): (True, "Dynamo's YAML router policy classes are " + _NOT_SERVED),
    ("--router-prefill-policy",): (True, _ROUTER), ("--router-decode-policy",): (True, _ROUTER),
    ("--router-kv-overlap-score-credit",): (True, _ROUTER),
    ("--router-kv-overlap-score-credit-decay",): (True, _ROUTER),
    ("--router-prefill-load-scale",): (True, _ROUTER), ("--router-decode-active-request-weight",): (True, _ROUTER),
    ("--router-host-cache-hit-weight",): (True, _ROUTER), ("--router-disk-cache-hit-weight",): (True, _ROUTER),
    ("--router-prefill-load-model",): (True, _ROUTER), ("--router-predicted-ttl-secs",): (True, _ROUTER),
    ("--router-approximate-cache-policy",): (True, _ROUTER), ("--router-event-threads",): (True, _ROUTER),
    ("--router-tracking-hash",): (True, _ROUTER), ("--router-tracking-key-file",): (True, _ROUTER),
    ("--router-tracking-key-id",): (True, _ROUTER),
    ("--shared-cache-type",): (True, "shared (HiCache) cache tiers are " + _NOT_SERVED),
    ("--shared-cache-multiplier",): (True, "shared (HiCache) cache tiers are " + _NOT_SERVED),
    **{(f"--{prefix}-{name}",): (True, _AIC) for prefix in ("aic", "ais") for name in (
        "backend", "backend-version", "system", "model-path", "tp-size", "moe-tp-size", "moe-ep-size",
        "attention-dp-size", "nextn", "nextn-accept-rates", "mtp-seed")},
    ("--ais-perf-config",): (True, _AIC),
}
# Transport security this runtime does not implement: refused, never downgraded to plaintext.
REFUSED = ("--tcp-tls-cert-path", "--tcp-tls-key-path", "--tcp-tls-ca-cert-path", "--tcp-tls-client-cert-path",
           "--tcp-tls-client-key-path", "--tcp-tls-client-ca-cert-path", "--nats-tls-ca-cert-path",
           "--nats-tls-client-cert-path", "--nats-tls-client-key-path", "--nats-tls-insecure")
_DEST = "_dynamo_compat"


def add_compat_arguments(parser: argparse.ArgumentParser) -> None:
    """Accept every flag above (the given ones are collected under one namespace attribute)."""
    for names, (takes_value, _why) in IGNORED.items():
        _add(parser, names, takes_value)
    for name in REFUSED:
        _add(parser, (name,), name != "--nats-tls-insecure")


def _add(parser: argparse.ArgumentParser, names: tuple[str, ...], takes_value: bool) -> None:
    flags = [n for n in names if n.startswith("-")]
    kind = dict(nargs=None, metavar="VALUE") if takes_value else dict(nargs=0)
    parser.add_argument(*flags, action=_Collect, dest=_DEST, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        **kind)
    if not takes_value:  # Dynamo's bools are negatable: --no-<name>
        parser.add_argument(*[f"--no-{n[2:]}" for n in flags if n.startswith("--")], action=_Collect, dest=_DEST,
                            nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


class _Collect(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = dict(getattr(namespace, _DEST, {}))
        given[option_string] = values
        setattr(namespace, _DEST, given)


def check_compat_flags(namespace: argparse.Namespace, error) -> list[str]:
    """One warning per accepted flag that was given (the caller logs them once logging is set up);
    `error(message)` (argparse's: exits 2) on a refused one."""
    given = getattr(namespace, _DEST, {})
    refused = sorted(f for f in given if f.lstrip("-").removeprefix("no-") in {r[2:] for r in REFUSED})
    if refused:
        error(f"{', '.join(refused)}: TLS on the request plane and to NATS is not implemented by this runtime; "
              "run without these flags inside a trusted network, or use NVIDIA Dynamo's image")
    warnings = []
    for flag in given:
        if flag.startswith("--no-"):
            continue  # turning off what is not served here is what happens anyway
        names, (_, why) = _entry(flag)
        warnings.append(f"{flag} is accepted for compatibility with NVIDIA Dynamo and has no effect: {why}")
    return warnings


def _entry(flag: str) -> tuple[tuple[str, ...], tuple[bool, str]]:
    bare = "--" + flag.lstrip("-").removeprefix("no-") if flag.startswith("--") else flag
    return next((names, spec) for names, spec in IGNORED.items() if bare in names)

"""The NVIDIA Dynamo 1.6.1 frontend flags this frontend does not act on (runtime/compat_args.py
says how such flags are handled): accepted with a start-up warning when they are tuning knobs of
Dynamo's own router or tokenizer, or features this frontend does not serve; refused when the
operator asked for TLS on the request plane or to NATS, since plaintext is no fallback for that.
"""

from __future__ import annotations

from dynamo.runtime.compat_args import CompatFlags

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
FRONTEND_FLAGS = CompatFlags(
    IGNORED, [(name, name != "--nats-tls-insecure") for name in REFUSED],
    "TLS on the request plane and to NATS is not implemented by this runtime; run without these flags inside "
    "a trusted network, or use NVIDIA Dynamo's image")

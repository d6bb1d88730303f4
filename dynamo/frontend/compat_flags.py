"""The NVIDIA Dynamo 1.6.1 frontend flags this frontend does not act on (runtime/compat_args.py
says how such flags are handled): accepted with a start-up warning when they are tuning knobs of
Dynamo's own router (router/compat_flags.py, shared with `python -m dynamo.router`) or tokenizer, or
features this frontend does not serve.
"""

from __future__ import annotations

from dynamo.router.compat_flags import ROUTER_IGNORED
from dynamo.runtime.compat_args import CompatFlags

_NOT_SERVED = "not served by this frontend"
# flag (first name is Dynamo's; more are its aliases) -> (takes a value, why it has no effect here)
IGNORED: dict[tuple[str, ...], tuple[bool, str]] = {
    ("--interactive", "-i"): (False, "the text chat REPL is not provided; the HTTP server starts as usual"),
    ("--exclude-tools-when-tool-choice-none",): (False, "tool_choice none already leaves tools out of the prompt"),
    ("--dyn-chat-processor",): (True, "templates and tokenization are always this frontend's own"),
    ("--dyn-preprocess-workers",): (True, "big prompts are preprocessed on this frontend's own thread pool"),
    ("--tokenizer",): (True, "the model's HF tokenizer is always used"),
    # What `--dyn-chat-processor vllm` frontends also take from vLLM's own serve flags.
    ("--enable-auto-tool-choice",): (False, "tool_choice auto is always served where the model has a tool parser"),
    ("--tokenizer-fallback",): (False, "the model's HF tokenizer is always used"),
    ("--trust-remote-code",): (False, "no model code is run here: tokenizer.json and the chat template only"),
    ("--dyn-debug-perf",): (False, "per-request performance debug logs are not produced"),
    ("--frontend-route-extension",): (True, "route extensions are " + _NOT_SERVED),
    ("--response-plane",): (True, "responses always return over the request's own TCP stream"),
    ("--max-prefill-tokens",): (True, "the workers report their own batch sizes in their model cards"),
    # Newer Dynamo (after 1.6.1): sticky session routing plus SGLang streaming-session RPCs.
    ("--enable-agent-controller",): (False, "sticky routing for nvext.session_control is always on here; engine "
                                     "session slots (SGLang streaming sessions) are not opened"),
    # Removed in NVIDIA Dynamo 1.6.1 itself, which still accepts it (choices token-capacity, none) with a warning.
    ("--admission-control",): (True, "admission thresholds are set directly here: --active-decode-blocks-threshold, "
                               "--active-prefill-tokens-threshold and --active-prefill-tokens-threshold-frac"),
    **ROUTER_IGNORED,
}
ADMISSION_CONTROL_CHOICES = ("token-capacity", "none")
# Dynamo 1.6.1 reads the variable only to warn that it is ignored (a compat flag's twin is otherwise not read).
ADMISSION_CONTROL_ENV = "DYN_ADMISSION_CONTROL"
ADMISSION_CONTROL_ENV_WARNING = (f"{ADMISSION_CONTROL_ENV} is accepted for compatibility with NVIDIA Dynamo and has no "
                                 "effect: set DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD, DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD "
                                 "and DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD_FRAC directly")
# TLS on the request plane and to NATS (`--tcp-tls-*`, `--nats-tls-*`) are runtime settings every
# component takes (runtime/compat_args.py), not listed here.
FRONTEND_FLAGS = CompatFlags(IGNORED)

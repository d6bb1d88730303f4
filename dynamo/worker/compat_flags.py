"""The flags of NVIDIA Dynamo 1.6.1's engine workers (`python -m dynamo.vllm|sglang|trtllm`) that
ours do not act on (runtime/compat_args.py says how such flags are handled).

Dynamo gives every engine worker one runtime group (request and response planes, TLS, structural
tags, multimodal caches, ...); each engine adds its own. A manifest written for Dynamo's image passes
them freely, so a flag we do not know must not crash-loop the pod:
- accepted, with a start-up warning naming why it has no effect, when ignoring it changes nothing
  the operator relies on (a transport that is TCP here anyway, a cache of a feature not served);
- refused, with the reason, when ignoring it would quietly serve something else than asked:
  multimodal encoder topologies, a worker of another kind (embedding-only
  classify, realtime, diffusion, a headless multi-node rank), RL parity, a start-up benchmark.
TLS on the request plane and to NATS are runtime settings every component takes
(runtime/compat_args.py). `--dyn-tool-call-parser`, `--dyn-reasoning-parser`, `--custom-jinja-template`,
`--dyn-default-thinking-mode` and `--endpoint-types` take effect (worker/engine_args.py).
"""

from __future__ import annotations

from typing import Mapping

from dynamo.runtime.compat_args import CompatFlags

_TCP = "requests and responses always travel over TCP between our frontend and workers"
_STRUCTURAL = "structural-tag guided decoding is not applied; tool calls are parsed from the output by the frontend"
_MM_KNOB = "multimodal input is not served by this worker"
# A model that also reads images (Qwen3.5, Kimi K2.6/K3) is served as the text model it is too: its recipes
# pass --enable-multimodal for the vision path, and a 400 on media parts is said, not silent. Encoder
# workers and routes to them are multimodal topologies with nothing else to serve: still refused.
MM_TEXT = ("this worker serves the model's text only; the frontend answers image, video and audio parts with a 400 "
            "(multimodal input is not served here)")
_NOT_DIFFUSION = "diffusion models are not served by this worker"

# Dynamo's runtime group: flag -> (takes a value, why it has no effect here).
RUNTIME_IGNORED: dict[tuple[str, ...], tuple[bool | str, str]] = {
    ("--request-plane",): (True, _TCP),
    ("--response-plane",): (True, _TCP),
    ("--kv-state-endpoint",): (True, "KV events and router resync are served on the worker's own endpoint"),
    ("--fpm-trace",): (False, "forward-pass metrics go to the event plane and /metrics, not to trace files"),
    ("--exclude-tools-when-tool-choice-none",): (False, "the frontend always leaves tools out of the prompt when "
                                                        "tool_choice is none"),
    ("--dyn-enable-structural-tag",): (False, _STRUCTURAL),
    ("--dyn-structural-tag",): (True, _STRUCTURAL),
    ("--dyn-structural-tag-scope",): (True, _STRUCTURAL),
    ("--dyn-structural-tag-schema",): (True, _STRUCTURAL),
    ("--multimodal-embedding-cache-capacity-gb",): (True, _MM_KNOB),
    ("--multimodal-embedding-cache-publisher",): (False, _MM_KNOB),
    ("--media-output-fs-url",): (True, "no images or videos are generated here"),
    ("--media-output-http-url",): (True, "no images or videos are generated here"),
    ("--frontend-decoding",): (False, _MM_KNOB),
    ("--enable-multimodal",): (False, MM_TEXT),
}
# Router settings a Dynamo worker set advertises in its card, to override the frontend's routing for that
# set only (Dynamo's worker router group); switches first, then flags that take a value.
_ROUTER_WHY = ("per-worker-set router settings are not read from the model card here: give them to the frontend "
               "or `python -m dynamo.router`")
_ROUTER_SWITCHES = (("--load-aware",), ("--router-kv-events", "--kv-events"), ("--router-replica-sync",),
                    ("--router-track-active-blocks", "--track-active-blocks"),
                    ("--router-track-output-blocks", "--track-output-blocks"),
                    ("--router-assume-kv-reuse", "--assume-kv-reuse"), ("--router-track-prefill-tokens",),
                    ("--router-conditional-disagg",), ("--use-remote-indexer",), ("--enable-session-prefix-index",))
_ROUTER_VALUES = ("--router-mode", "--router-session-affinity-ttl-secs", "--router-session-affinity-mode",
                  "--active-decode-blocks-threshold", "--active-prefill-tokens-threshold",
                  "--active-prefill-tokens-threshold-frac", "--router-kv-overlap-score-credit",
                  "--router-kv-overlap-score-credit-decay", "--router-prefill-load-scale",
                  "--router-decode-active-request-weight", "--router-host-cache-hit-weight",
                  "--router-disk-cache-hit-weight", "--router-temperature", "--router-tracking-hash",
                  "--router-tracking-key-file", "--router-tracking-key-id", "--router-prefill-load-model",
                  "--router-ttl-secs", "--router-approximate-cache-policy", "--router-queue-threshold",
                  "--router-policy-config", "--router-conditional-disagg-config", "--router-prefill-policy",
                  "--router-decode-policy", "--router-event-threads", "--router-queue-policy",
                  "--shared-cache-multiplier", "--shared-cache-type", "--router-predicted-ttl-secs")
WORKER_ROUTER_IGNORED: dict[tuple[str, ...], tuple[bool | str, str]] = {
    **{names: (False, _ROUTER_WHY) for names in _ROUTER_SWITCHES},
    **{(name,): (True, _ROUTER_WHY) for name in _ROUTER_VALUES},
    ("--router-kv-overlap-score-weight", "--kv-overlap-score-weight"): (True, _ROUTER_WHY),
}
_REFUSED_RUNTIME = {"--output-modalities": "only text output is served by this worker"}
_MULTIMODAL = "multimodal input is not served by this worker (the frontend answers image and audio parts with a 400)"


def worker_flags(ignored: Mapping[tuple[str, ...], tuple[bool | str, str]],
                 refused: Mapping[str, tuple[bool | str, str]], served: tuple[tuple[str, ...], ...] = ()) -> CompatFlags:
    """An engine worker's table: the runtime group's and the worker router group's flags plus the
    engine's own, `refused` as flag -> (takes a value, why); `served`: runtime flags this engine acts on."""
    refusals = {**{flag: (True, why) for flag, why in _REFUSED_RUNTIME.items()}, **refused}
    runtime = {names: spec for names, spec in RUNTIME_IGNORED.items() if names not in served}
    return CompatFlags({**runtime, **WORKER_ROUTER_IGNORED, **ignored}, [(flag, spec[0]) for flag, spec in refusals.items()],
                       refused_reasons={flag: spec[1] for flag, spec in refusals.items()})


VLLM_FLAGS = worker_flags({
    ("--use-vllm-tokenizer",): (False, "the frontend tokenizes with the model's own tokenizer files and chat "
                                       "template, the files vLLM reads"),
    ("--embedding-worker",): (False, "an engine started with --runner pooling serves embeddings by itself"),
    ("--embedding-worker-processes",): (True, "embeddings are served by the worker process itself"),
    ("--embedding-frontend-tokenization",): (False, "the frontend always tokenizes"),
    ("--mm-prompt-template",): (True, _MM_KNOB),
    ("--embedding-transfer-mode",): (True, _MM_KNOB),
    ("--model-express-url",): (True, "deprecated by Dynamo too: the ModelExpress plugin reads its own settings"),
    **{(f"--{name}",): (True, "no start-up benchmark is run (it is refused with --benchmark-mode)")
       for name in ("benchmark-output-path", "benchmark-points-file", "benchmark-timeout",
                    "benchmark-warmup-iterations", "benchmark-max-batch-size", "benchmark-prefill-granularity",
                    "benchmark-decode-length-granularity", "benchmark-decode-batch-granularity",
                    "benchmark-prefill-batch-granularity", "benchmark-prefill-kv-read-granularity",
                    "prefill-max-new-token-samples", "prefill-max-kv-read-token-samples",
                    "prefix-max-batch-size-samples", "decode-max-batch-size-samples",
                    "decode-max-kv-read-token-samples")},
    **{(f"--{name}",): (False, "no start-up benchmark is run (it is refused with --benchmark-mode)")
       for name in ("benchmark-collect-imbalanced", "benchmark-hybrid-live-state", "benchmark-randomize-kda-state")},
}, {
    "--connector": ("*", "--connector is no longer supported for vLLM (as in NVIDIA Dynamo): give vLLM's "
                         "--kv-transfer-config, e.g. '{\"kv_connector\":\"NixlConnector\",\"kv_role\":\"kv_both\"}'"),
    "--route-to-encoder": (False, _MULTIMODAL),
    # The roles of Dynamo's multimodal vLLM graphs (encode, processor, prefill/decode of embeddings).
    **{f"--multimodal-{role}": (False, _MULTIMODAL) for role in ("encode-worker", "worker", "processor",
                                                                "decode-worker", "encode-prefill-worker")},
    "--custom-encoder-class": (True, _MULTIMODAL),
    "--headless": (False, "headless secondary ranks of a multi-node vLLM are not supported: this worker would "
                          "register and serve as a whole worker"),
    "--realtime": (False, "/v1/realtime is not served"),
    "--gms-shadow-mode": (False, "GPU Memory Service shadow engines are not supported"),
    "--enable-rl": (False, "RL token-in/token-out defaults are not selected here: set vLLM's own flags"),
    "--benchmark-mode": (True, "the start-up self-benchmark is not run by this worker"),
}, served=(("--enable-multimodal",),))

SGLANG_FLAGS = worker_flags({
    ("--use-sglang-tokenizer",): (False, "the frontend tokenizes with the model's own tokenizer files and chat "
                                         "template, the files SGLang reads"),
    ("--embedding-transfer-mode",): (True, _MM_KNOB),
    ("--sglang-trace-level",): (True, "SGLang's request tracing is not exported by this worker"),
    ("--connector",): ("*", "KV moves between SGLang workers by SGLang's own disaggregation transfer"),
}, {
    "--dedicated-mm-encoder": (False, _MULTIMODAL),
    "--embedding-worker": (False, "SGLang embedding workers are not served by this worker"),
    "--rerank-worker": (False, "rerank workers are not served"),
    "--image-diffusion-worker": (False, _NOT_DIFFUSION),
    "--video-generation-worker": (False, _NOT_DIFFUSION),
    "--gateway-workers": (True, "SGLang gateway processes are not run: one worker serves one engine"),
    "--engine-route": (True, "engine routes (/engine/<path>) are not served"),
    "--disagg-config": (True, "give SGLang's disaggregation flags directly"),
    "--disagg-config-key": (True, "give SGLang's disaggregation flags directly"),
    "--enable-rl": (False, "RL metadata upload is not supported"),
})

TRTLLM_FLAGS = worker_flags({
    ("--skip-warmup",): (False, "no warm-up request is run at start"),
    ("--conversation-affinity",): (False, "attention-DP rank placement is left to TensorRT-LLM"),
    ("--conversation-affinity-dp-rank-source",): (True, "attention-DP rank placement is left to TensorRT-LLM"),
    ("--model-loader-extra-config",): (True, "used only with --load-format gms, which is refused"),
    ("--allowed-local-media-path",): (True, _MM_KNOB),
    ("--max-file-size-mb",): (True, _MM_KNOB),
    ("--connector",): ("*", "KV moves between TensorRT-LLM workers by its own cache transceiver"),
    **{(f"--{name}",): (True, _NOT_DIFFUSION)
       for name in ("quant-algo", "teacache-thresh", "torch-dtype", "attn-backend", "dit-ulysses-size",
                    "dit-ring-size", "dit-cfg-size", "default-height", "default-width", "default-num-inference-steps",
                    "default-guidance-scale", "default-num-frames", "default-num-images-per-prompt")},
    **{(f"--{name}",): (False, _NOT_DIFFUSION)
       for name in ("quant-dynamic", "enable-teacache", "teacache-use-ret-steps", "disable-torch-compile",
                    "enable-fullgraph", "enable-cuda-graph")},
    ("--enable-layerwise-nvtx-marker",): (False, "no NVTX markers are emitted"),
}, {
    "--encode-endpoint": (True, _MULTIMODAL),
})

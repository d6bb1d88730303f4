"""Our wire request -> SGLang `async_generate` arguments, and SGLang's streamed output
dicts -> `LLMEngineOutput` (translation only; the harness owns admission and aborts).

The worker runs SGLang with `skip_tokenizer_init` (token ids in and out: the frontend
tokenizes, detokenizes and matches stop strings) and `incremental_streaming_output`
(each streamed `output_ids` is a disjoint delta, our wire's shape).
"""

from __future__ import annotations

from typing import Any

from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest
from dynamo.llm.structured_output import sglang_params

# Our sampling option -> SGLang sampling-params key.
SAMPLING_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                 "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
                 "repetition_penalty": "repetition_penalty", "seed": "sampling_seed"}
BOOTSTRAP_KEYS = ("bootstrap_host", "bootstrap_port", "bootstrap_room")


def sampling_params(request: PreprocessedRequest, context_length: int, prefill_only: bool = False) -> dict[str, Any]:
    so, sc = request.sampling_options, request.stop_conditions
    params: dict[str, Any] = {}
    for ours, theirs in SAMPLING_KEYS.items():
        value = getattr(so, ours)
        if value is not None:
            params[theirs] = value
    if params.get("top_k") is not None and params["top_k"] <= 0:
        params["top_k"] = -1  # OpenAI-style "no limit" (SGLang: -1)
    max_tokens = sc.max_tokens
    if max_tokens is None:  # Dynamo: the rest of the context
        max_tokens = max(1, context_length - len(request.token_ids))
    params["max_new_tokens"] = 1 if prefill_only else max_tokens
    if sc.min_tokens:
        params["min_new_tokens"] = sc.min_tokens
    stop_ids = list(sc.stop_token_ids_hidden or [])
    if not sc.ignore_eos:  # ignore_eos must not be undone by listing EOS as a stop token
        stop_ids += [t for t in request.eos_token_ids if t not in stop_ids]
    if stop_ids:
        params["stop_token_ids"] = stop_ids
    params["ignore_eos"] = sc.ignore_eos
    params["skip_special_tokens"] = request.output_options.skip_special_tokens
    params.update(sglang_params(so.guided_decoding))  # structured output (SGLang's grammar backend)
    return params


def bootstrap_of(params: dict[str, Any] | None) -> dict[str, Any]:
    """The bootstrap triple a decode request carries (from its prefill's disaggregated params)."""
    if not params:
        return {}
    info = params.get("bootstrap_info", params)
    found = {k: info[k] for k in BOOTSTRAP_KEYS if info.get(k) is not None}
    if found and len(found) != len(BOOTSTRAP_KEYS):
        raise ValueError(f"disaggregated_params: incomplete SGLang bootstrap info {found}")
    return found


def finish_reason(reason: dict[str, Any] | None, eos_ids: set[int]) -> FinishReason | None:
    """SGLang's finish reason -> ours. An abort with an HTTP 4xx status is a bad request."""
    if not reason:
        return None
    kind = reason.get("type")
    if kind == "stop":
        matched = reason.get("matched")
        return FinishReason.EOS if matched is None or matched in eos_ids else FinishReason.STOP
    if kind == "length":
        return FinishReason.LENGTH
    if kind == "abort":
        status = reason.get("status_code")
        if isinstance(status, int) and 400 <= status < 500:
            raise ValueError(reason.get("message") or "request rejected by SGLang")
        return FinishReason.CANCELLED if status is None else FinishReason.ERROR
    return FinishReason.ERROR


def to_output(res: dict[str, Any], first: bool, eos_ids: set[int]) -> LLMEngineOutput:
    meta = res.get("meta_info") or {}
    out = LLMEngineOutput(token_ids=list(res.get("output_ids") or ()),
                          finish_reason=finish_reason(meta.get("finish_reason"), eos_ids))
    if first:
        out.cached_tokens = int(meta.get("cached_tokens") or 0)
    if out.finish_reason == FinishReason.STOP:
        out.stop_reason = (meta.get("finish_reason") or {}).get("matched")
    if out.finish_reason == FinishReason.ERROR:
        out.error = str((meta.get("finish_reason") or {}).get("message") or "SGLang request failed")
    return out

"""Our wire request <-> TensorRT-LLM's LLM API (translation only).

- `sampling_kwargs`: `SamplingParams(...)` keyword arguments (token ids in, no detokenize).
- `disagg_to_wire` / `disagg_from_wire`: TRT-LLM's `DisaggregatedParams` carried opaque
  through the frontend (bytes such as `opaque_state` as base64, listed under `_b64`); the
  decode worker rebuilds it with `request_type="generation_only"`.
- `kv_event_batch`: one of TRT-LLM's KV-event dicts (`get_kv_cache_events_async`) in the
  map form `EngineEventDecoder` reads (`{"type": "BlockStored", ...}`).
- `load_from_stats`: an iteration-stats dict (`get_stats_async`) as our `LoadMetrics`.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from dynamo.llm.protocol import FinishReason, PreprocessedRequest
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.llm.structured_output import trtllm_fields

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
                 "repetition_penalty")


def sampling_kwargs(request: PreprocessedRequest, max_seq_len: int, prefill_only: bool = False) -> dict[str, Any]:
    so, sc = request.sampling_options, request.stop_conditions
    if sc.max_thinking_tokens is not None:  # refused, not silently unbounded (a 400 from the harness)
        raise ValueError("max_thinking_tokens is not supported by this worker: TRT-LLM's LLM API takes no "
                         "per-request reasoning budget")
    kwargs: dict[str, Any] = {k: getattr(so, k) for k in SAMPLING_KEYS if getattr(so, k) is not None}
    if kwargs.get("top_k") is not None and kwargs["top_k"] <= 0:
        kwargs["top_k"] = 0  # OpenAI-style "no limit"
    max_tokens = sc.max_tokens
    if max_tokens is None:
        max_tokens = max(1, max_seq_len - len(request.token_ids))
    kwargs["max_tokens"] = 1 if prefill_only else max_tokens
    if sc.min_tokens:
        kwargs["min_tokens"] = sc.min_tokens
    stop_ids = list(sc.stop_token_ids_hidden or [])
    if not sc.ignore_eos:
        stop_ids += [t for t in request.eos_token_ids if t not in stop_ids]
    if stop_ids:
        kwargs["stop_token_ids"] = stop_ids
    kwargs["ignore_eos"] = sc.ignore_eos
    kwargs["detokenize"] = False
    if request.output_options.logprobs is not None:
        kwargs["logprobs"] = request.output_options.logprobs
    guided = trtllm_fields(so.guided_decoding)
    if guided:  # the adapter makes TensorRT-LLM's GuidedDecodingParams of these fields
        kwargs["guided_decoding"] = guided
    return kwargs


def finish_reason(completion: Any, eos_ids: set[int]) -> FinishReason | None:
    reason = getattr(completion, "finish_reason", None)
    if reason is None:
        return None
    if reason == "stop":
        stop = getattr(completion, "stop_reason", None)
        return FinishReason.EOS if stop is None or stop in eos_ids else FinishReason.STOP
    if reason == "length":
        return FinishReason.LENGTH
    if reason in ("cancelled", "abort"):
        return FinishReason.CANCELLED
    return FinishReason.ERROR


def disagg_to_wire(params: Any) -> dict[str, Any]:
    """A `DisaggregatedParams` dataclass as a JSON/msgpack-safe dict."""
    fields = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(vars(params))
    out: dict[str, Any] = {}
    b64: list[str] = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(bytes(value)).decode()
            b64.append(key)
        out[key] = value
    if b64:
        out["_b64"] = b64
    return out


def disagg_from_wire(wire: dict[str, Any], request_type: str) -> dict[str, Any]:
    """`DisaggregatedParams(**kwargs)` arguments from what `disagg_to_wire` produced."""
    kwargs = {k: v for k, v in wire.items() if k not in ("_b64", "transfer")}
    for key in wire.get("_b64", ()):
        kwargs[key] = base64.b64decode(kwargs[key])
    kwargs["request_type"] = request_type
    return kwargs


def kv_event_batch(event: dict[str, Any], block_size: int) -> list[dict[str, Any]]:
    """One TRT-LLM KV event -> the decoder's map-form events (created/updated: nothing)."""
    data = event.get("data") or {}
    kind = data.get("type")
    if kind == "stored":
        parent = data.get("parent_hash")
        out = []
        for block in data.get("blocks") or ():
            tokens = [t["token_id"] if isinstance(t, dict) else int(t) for t in block.get("tokens") or ()]
            stored = {"type": "BlockStored", "block_hashes": [block["block_hash"]], "parent_block_hash": parent,
                      "token_ids": tokens, "block_size": block_size, "lora_id": block.get("lora_id")}
            salt = block.get("cache_salt") or data.get("cache_salt")  # TRT-LLM 1.3: on each block
            if salt:  # the decoder's shape (vLLM's extra keys); it applies it to a sequence's first block
                stored["extra_keys"] = [[salt]]
            out.append(stored)
            parent = block["block_hash"]
        return out
    if kind == "removed":
        return [{"type": "BlockRemoved", "block_hashes": list(data.get("block_hashes") or ())}]
    return []


def load_from_stats(stats: dict[str, Any], worker_id: int, total_slots: int) -> LoadMetrics:
    kv = stats.get("kvCacheStats") or {}
    total = int(kv.get("maxNumBlocks") or 0)
    used = int(kv.get("usedNumBlocks") or 0)
    return LoadMetrics(worker_id=worker_id, request_active_slots=int(stats.get("numActiveRequests") or 0),
                       request_total_slots=int(stats.get("maxNumActiveRequests") or total_slots),
                       kv_active_blocks=used, kv_total_blocks=total,
                       num_requests_waiting=int(stats.get("numQueuedRequests") or 0),
                       gpu_cache_usage_perc=used / total if total else 0.0,
                       gpu_prefix_cache_hit_rate=float(kv.get("cacheHitRate") or 0.0))

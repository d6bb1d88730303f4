"""The response's `nvext` (NVIDIA Dynamo's `nvext.extra_fields` on a request): which workers served
it and how long each stage took, for a client that wants to see its routing.

    "extra_fields": ["worker_id", "timing", "stop_reason"]  ->  "nvext": {
        "worker_id": {"prefill_worker_id", "prefill_dp_rank", "decode_worker_id", "decode_dp_rank"},
        "timing": {"request_received_ms", "prefill_wait_time_ms", "prefill_time_ms", "ttft_ms", "total_time_ms",
                   "kv_hit_rate"}, "stop_reason": ...}

`worker_id`: the decode worker (the one that streamed the answer, after any migration) and the
prefill worker, the same one unless a prefill worker prefilled it (disaggregated serving).
`stop_reason` (single-choice requests, as Dynamo serves it): the stop that ended the answer, a stop
string the frontend matched or the engine's matched stop token id; null when none did (EOS, length).
`timing`: `request_received_ms` is wall-clock epoch milliseconds; the others count from then:
`prefill_wait_time_ms` until the first worker stream opened (a prefill worker's when one prefills:
tokenizing, routing, the router's queue), `prefill_time_ms` from there to the first token (Dynamo's
split of `ttft_ms`), and `total_time_ms`; `kv_hit_rate` is the prompt's fraction of KV blocks the KV
router found cached on the worker it chose (KV routing only). A streamed answer carries it in one
more chunk (`choices` empty) before `[DONE]`; a unary one as a top-level field. Names this version
does not produce (Dynamo adds more over time) are ignored, as Dynamo ignores names it does not know.
"""

from __future__ import annotations

import math
import time
from typing import Any

from dynamo.frontend.errors import bad_request

PARAM = "nvext.extra_fields"
KNOWN = ("worker_id", "timing", "stop_reason")


def requested(nvext: dict[str, Any] | None) -> frozenset[str]:
    """The response fields asked for; a 400 for anything but a list of names."""
    fields = (nvext or {}).get("extra_fields")
    if fields is None:
        return frozenset()
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise bad_request(f"{PARAM} must be a list of field names, e.g. [\"worker_id\", \"timing\"]", PARAM,
                          "invalid_type")
    return frozenset(f for f in fields if f in KNOWN)


def worker_ids(handle) -> dict[str, int] | None:
    """Who served the request, from its stream handle; None before any worker was chosen."""
    if handle.worker_id is None:
        return None
    prefill_id, prefill_rank, _ = handle.prefilled_by()
    return {"prefill_worker_id": prefill_id, "prefill_dp_rank": prefill_rank,
            "decode_worker_id": handle.worker_id, "decode_dp_rank": handle.dp_rank}


def timing(received_epoch: float, ttft: float | None, total: float, hit_blocks: int | None, isl: int,
           block_size: int, prefill_start: float | None = None) -> dict[str, Any]:
    """`received_epoch` in seconds; `ttft`, `total` and `prefill_start` (the first worker stream
    opened) in seconds since then; `hit_blocks` the KV router's cached blocks on the chosen worker
    (None: not KV routing)."""
    out: dict[str, Any] = {"request_received_ms": int(received_epoch * 1000)}
    if prefill_start is not None:
        out["prefill_wait_time_ms"] = round(prefill_start * 1000, 3)
        if ttft is not None:
            out["prefill_time_ms"] = round(max(ttft - prefill_start, 0.0) * 1000, 3)
    if ttft is not None:
        out["ttft_ms"] = round(ttft * 1000, 3)
    out["total_time_ms"] = round(total * 1000, 3)
    blocks = math.ceil(isl / block_size) if block_size > 0 else 0
    if hit_blocks is not None and blocks:
        out["kv_hit_rate"] = min(hit_blocks / blocks, 1.0)
    return out


def of_run(run) -> dict | None:
    """A generation run's `nvext` (`generation.GenerationRun`), with the fields its request's `nvext.extra_fields`
    asked for."""
    if not run.extra_fields:
        return None
    out: dict = {}
    handle = run.choices[0].handle
    if "worker_id" in run.extra_fields and (ids := worker_ids(handle)) is not None:
        out["worker_id"] = ids
    if "stop_reason" in run.extra_fields and len(run.choices) == 1:  # Dynamo: single-choice only
        choice = run.choices[0]
        out["stop_reason"] = choice.stage.matched_stop or choice.stop_reason
    if "timing" in run.extra_fields:
        now, started, first_at = time.monotonic(), run.timing.started, run.timing.first_token_at
        first = None if first_at is None else first_at - started
        hit = handle.overlap_blocks
        began = None if handle.prefill_started is None else handle.prefill_started - started
        out["timing"] = timing(time.time() - (now - started), first, now - started, hit, len(run.preqs[0].token_ids),
                               run.block_size, began)
    return out

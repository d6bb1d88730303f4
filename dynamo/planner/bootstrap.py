"""Start the `sla` perf models from the profiler's interpolation data (Dynamo's third
bootstrap source: profile files turned into synthetic forward passes), so the planner
can act before live traffic has produced `load_min_observations` samples.

Prefill points (ISL, TTFT at concurrency 1) become one prefill iteration of `isl` tokens;
decode points (KV usage, context length, ITL) become one decode iteration of
`kv_usage * max_kv_tokens / context_length` requests holding `kv_usage * max_kv_tokens`
tokens. Live samples then take over: the models' buckets evict the oldest.
"""

from __future__ import annotations

import logging

from dynamo.planner.perf_model import PerfModel, decode_x, prefill_x
from dynamo.profiler.interpolation import load_profile

log = logging.getLogger(__name__)


def seed_models(models: dict[str, PerfModel], profile_dir: str) -> int:
    """Add the profile's points to the models present; returns how many were added."""
    try:
        profile = load_profile(profile_dir)
    except (OSError, ValueError) as exc:
        log.warning("planner: no usable interpolation data in %s: %s", profile_dir, exc)
        return 0
    added = 0
    prefill = models.get("prefill")
    if prefill is None and models.get("decode") is not None and models["decode"].dims == 3:
        prefill = models["decode"]  # agg: one model for both phases
    if profile.prefill is not None and prefill is not None:
        for isl, ttft in zip(profile.prefill.isl, profile.prefill.ttft_ms):
            prefill.add(prefill_x(prefill, isl), ttft / 1000.0)
            added += 1
    decode = models.get("decode")
    if profile.decode is not None and decode is not None:
        d = profile.decode
        for x, ctx, itl in zip(d.kv_usage, d.context_length, d.itl_ms):
            kv = x * d.max_kv_tokens
            decode.add(decode_x(decode, kv / max(ctx, 1.0), kv), itl / 1000.0)
            added += 1
    log.info("planner: perf models seeded with %d profile points from %s", added, profile_dir)
    return added

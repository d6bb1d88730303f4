"""Start the `sla` perf models from the profiler's interpolation data (Dynamo's third
bootstrap source: profile files turned into synthetic forward passes), so the planner
can act before live traffic has produced `load_min_observations` samples.

Prefill points (ISL, TTFT at concurrency 1) become one prefill iteration of `isl` tokens;
decode points (KV usage, context length, ITL) become one decode iteration of
`kv_usage * max_kv_tokens / context_length` requests holding `kv_usage * max_kv_tokens`
tokens. Live samples then take over: the models' buckets evict the oldest.

The profile comes from `profile_results_dir`; where that holds no data and the config carries Dynamo's
`aic_interpolation` spec (a DGD from Dynamo's rapid profiler), from AIConfigurator at start.
"""

from __future__ import annotations

import asyncio
import logging

from dynamo.planner.config import PlannerConfig
from dynamo.planner.perf_model import PerfModel, decode_x, prefill_x
from dynamo.profiler.interpolation import Profile, load_profile

log = logging.getLogger(__name__)


async def startup_profile(cfg: PlannerConfig) -> tuple[Profile, str] | None:
    """The profile the perf models start from and where it came from, or None: `profile_results_dir`'s
    files, else (none there) the `aic_interpolation` spec's curves, built in a thread (seconds) so the
    event loop, and the health endpoint on it, keeps answering."""
    spec, where = cfg.aic_interpolation, cfg.profile_results_dir
    if spec is not None and cfg.optimization_target != "sla":
        log.info("planner: aic_interpolation unused: target %s has no perf model", cfg.optimization_target)
        spec = None
    if where:
        try:
            return load_profile(where), where
        except (OSError, ValueError) as exc:
            log.log(logging.INFO if spec else logging.WARNING, "planner: no usable interpolation data in %s: "
                    "%s%s", where, exc, "; estimating it from aic_interpolation" if spec else "")
    if spec is None:
        return None
    from dynamo.planner.aic_interpolation import build_profile

    profile = await asyncio.to_thread(build_profile, spec)
    return None if profile is None else (profile, f"AIConfigurator ({spec.hf_id} on {spec.system})")


def seed_models(models: dict[str, PerfModel], profile_dir: str) -> int:
    """Add the profile's points to the models present; returns how many were added."""
    try:
        profile = load_profile(profile_dir)
    except (OSError, ValueError) as exc:
        log.warning("planner: no usable interpolation data in %s: %s", profile_dir, exc)
        return 0
    return seed_profile(models, profile, profile_dir)


def seed_profile(models: dict[str, PerfModel], profile: Profile, source: str) -> int:
    """Add `profile`'s points to the models present; returns how many were added."""
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
    log.info("planner: perf models seeded with %d profile points from %s", added, source)
    return added

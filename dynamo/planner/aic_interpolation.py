"""Dynamo 1.6.1's `aic_interpolation` spec turned into the profile data the perf models seed from.

Dynamo's rapid profiler writes no profile files: it hands its planner the AIConfigurator picks
(`prefill_pick`, `decode_pick`) and the sweep's shape, and the planner runs AIConfigurator at start.
Here the spec drives our own profiler's code path (`dynamo.profiler.aic_curves`: thorough's grid,
AIConfigurator's static estimates and KV-cache model), so a DGD from Dynamo's profiler and one from
ours give the planner the same curves. AIConfigurator is an optional extra: without it, or when it
cannot estimate the picks, one warning says so and the perf models learn from live forward-pass
metrics alone, as before.

The spec's `isl`/`osl` (the workload the picks were made for) do not enter the curves: the decode
sweep's OSL is thorough's fixed 500 tokens and the KV capacity the engine's own budget, as in our
profiler.
"""

from __future__ import annotations

import logging
import time

from dynamo.llm.perf_data import Profile
from dynamo.planner.config import AicInterpolation, ParallelPick
from dynamo.profiler.aic_curves import aic_profile
from dynamo.profiler.dgd import Choice, WorkerChoice
from dynamo.profiler.rapid import EXTRA_HINT
from dynamo.profiler.thorough import SweepOptions

log = logging.getLogger("dynamo.planner")


def worker_of(role: str, pick: ParallelPick) -> WorkerChoice:
    return WorkerChoice(role, tp=pick.tp, pp=pick.pp, dp=pick.dp, moe_tp=pick.moe_tp, moe_ep=pick.moe_ep)


def sweep_of(spec: AicInterpolation) -> tuple[Choice, SweepOptions]:
    """The spec as `aic_profile`'s arguments. Both granularities are Dynamo's: prefill ISL points, decode
    context lengths, and (as Dynamo's sweep uses it) the decode concurrency points per context length."""
    choice = Choice("disagg", [worker_of("prefill", spec.prefill_pick), worker_of("decode", spec.decode_pick)],
                    "aiconfigurator")
    sweep = SweepOptions(max_context=spec.sweep_max_context_length,
                         prefill_granularity=spec.prefill_interpolation_granularity,
                         decode_granularity=spec.decode_interpolation_granularity,
                         concurrency_points=spec.decode_interpolation_granularity)
    return choice, sweep


def build_profile(spec: AicInterpolation) -> Profile | None:
    """AIConfigurator's curves for the spec's picks (blocking: ~50 estimates, seconds), or None after one
    warning naming what is missing."""
    what = f"{spec.hf_id} on {spec.system}/{spec.backend}"
    choice, sweep = sweep_of(spec)
    start = time.monotonic()
    try:
        profile = aic_profile(spec.hf_id, spec.system, spec.backend, choice, sweep)
    except ImportError as exc:
        log.warning("planner: aic_interpolation is set but AIConfigurator is not installed (%s): %s; the perf "
                    "models start from live forward-pass metrics", exc, EXTRA_HINT)
        return None
    except Exception as exc:  # AIConfigurator's errors have no common type
        log.warning("planner: aic_interpolation: AIConfigurator could not estimate %s (%s: %s); the perf models "
                    "start from live forward-pass metrics", what, type(exc).__name__, exc)
        return None
    p, d = spec.prefill_pick, spec.decode_pick
    log.info("planner: aic_interpolation: AIConfigurator curves for %s in %.1fs (estimates, not measurements): "
             "prefill TP%d %d points, decode TP%d %d points, KV capacity %d tokens", what,
             time.monotonic() - start, p.tp, len(profile.prefill.isl), d.tp, len(profile.decode.itl_ms),
             profile.decode.max_kv_tokens)
    return profile

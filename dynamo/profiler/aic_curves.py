"""Rapid search's planner profile data: AIConfigurator's per-point estimates on thorough's sweep grid.

Thorough search measures prefill TTFT against ISL and decode ITL against load and context length
on deployed engines, and the SLA planner seeds its perf models from those curves. Rapid search
deploys nothing, so without this module its planner would start with no engine capacity at all.
Here the same grid (`interpolation.prefill_isls` / `decode_isls`, thorough's concurrency points)
is filled with AIConfigurator's static estimates for the engines rapid picked: `static_ctx` at
batch 1 for TTFT, `static_gen` at each concurrency for ITL, AIConfigurator's memory model for the
decode engine's KV capacity. The result is a `Profile`, written exactly as thorough writes its own,
so the ConfigMap, the planner's mount and its loader are the same. The figures are estimates, not
measurements, and the status notes say so.

Dynamo 1.6.1 instead hands its planner an `aic_interpolation` spec and runs AIConfigurator in the
planner pod; computing the curves here keeps AIConfigurator out of the planner image and makes the
DGD's data fixed when it is generated. A DGD from Dynamo's own profiler still carries that spec: our
planner then runs `aic_profile` at start (`dynamo.planner.aic_interpolation`), the same estimates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from dynamo.llm.perf_data import DecodeProfile, PrefillProfile, Profile
from dynamo.profiler.dgd import Choice, WorkerChoice, dgd_backend, planner_config
from dynamo.profiler.dgdr import Request
from dynamo.profiler.interpolation import decode_isls, prefill_isls
from dynamo.profiler.rapid import aic_backend
from dynamo.profiler.thorough import SweepOptions, concurrency_points

log = logging.getLogger("dynamo.profiler")
PREFILL_OSL = 5  # a prefill-only request: the output length does not enter a static_ctx estimate
DEFAULT_BATCHED_TOKENS = 8192  # the engine's per-step token budget when the pick names none (vLLM's)
DEFAULT_MAX_SEQS = 256  # and its batch limit, for AIConfigurator's activation-memory estimate


class Estimator(Protocol):
    """Per-point engine estimates (ms, tokens) for one parallelism pick."""

    def ttft_ms(self, w: WorkerChoice, isl: int) -> float: ...

    def itl_ms(self, w: WorkerChoice, isl: int, osl: int, batch: int) -> float: ...

    def kv_tokens(self, w: WorkerChoice) -> int: ...


def planner_wants_curves(req: Request, mode: str) -> bool:
    """Whether the DGD's planner reads profile data: target `sla` (both of its loops predict with the
    perf models the profile seeds) unless its `pre_deployment_sweeping_mode` is `none` (Dynamo's
    "start from live forward-pass metrics")."""
    if not req.spec.planner:
        return False
    from dynamo.planner.config import convert

    try:
        cfg = convert(planner_config(req, dgd_backend(req), None, mode))
    except ValueError:  # refused at admission already; nothing to seed
        return False
    return cfg.optimization_target == "sla" and cfg.pre_deployment_sweeping_mode != "none"


def wants_curves(req: Request, mode: str) -> bool:
    """Whether the DGD has a reader of profile data: a planner that seeds from it, or mockers, which replay
    it (else they would run their built-in timing model, not the estimates the SLA was judged by)."""
    return req.spec.mocker or planner_wants_curves(req, mode)


def without_curves(req: Request, mode: str) -> str:
    """What the DGD's readers of profile data do when there is none, for the notes."""
    parts = []
    if planner_wants_curves(req, mode):
        parts.append("the planner's perf models start from live forward-pass metrics")
    if req.spec.mocker:
        parts.append("the mockers run their built-in timing model, not the estimates the SLA was judged by")
    return "; ".join(parts)


def prefill_curve(est: Estimator, w: WorkerChoice, isls: list[int]) -> PrefillProfile:
    xs, ttfts, thpts = [], [], []
    for isl in isls:
        ttft = est.ttft_ms(w, isl)
        if not ttft > 0:
            log.warning("rapid curves: no AIConfigurator TTFT at ISL %d (got %r); point skipped", isl, ttft)
            continue
        xs.append(float(isl)), ttfts.append(ttft), thpts.append(isl / ttft * 1000.0 / w.gpus)
    if len(xs) < 2:
        raise RuntimeError(f"AIConfigurator estimated only {len(xs)} prefill point(s)")
    return PrefillProfile(xs, ttfts, thpts)


def decode_curve(est: Estimator, w: WorkerChoice, isls: list[int], sweep: SweepOptions) -> DecodeProfile:
    """Decode points as thorough measures them: per context length, concurrency from 1 to what the KV
    cache holds (capped by the sweep's limit and the engine's own `max_num_seqs`)."""
    osl, max_kv = sweep.decode_osl, est.kv_tokens(w)
    if max_kv <= 0:
        raise RuntimeError(f"AIConfigurator leaves no KV cache for decode TP{w.tp}")
    cap = min(sweep.max_concurrency, w.max_num_seqs * w.dp if w.max_num_seqs else sweep.max_concurrency)
    xs, ys, zs, ts = [], [], [], []
    for isl in isls:
        ctx = isl + osl / 2
        top = min(max_kv // (isl + osl), cap)
        for n in concurrency_points(max(top, 1), sweep.concurrency_points):
            try:  # AIConfigurator's batch is per attention-DP rank
                itl = est.itl_ms(w, isl, osl, max(n // w.dp, 1))
            except RuntimeError as exc:  # e.g. its memory check says this batch does not fit
                log.warning("rapid curves: decode ISL %d concurrency %d not estimated: %s", isl, n, exc)
                continue
            if not itl > 0:
                log.warning("rapid curves: no AIConfigurator ITL at ISL %d concurrency %d (got %r)", isl, n, itl)
                continue
            xs.append(ctx * n / max_kv), ys.append(ctx), zs.append(itl), ts.append(n / itl * 1000.0 / w.gpus)
    if len(xs) < 2:
        raise RuntimeError(f"AIConfigurator estimated only {len(xs)} decode point(s)")
    return DecodeProfile(xs, ys, zs, ts, max_kv_tokens=max_kv)


def estimate_profile(est: Estimator, choice: Choice, sweep: SweepOptions) -> Profile:
    """The picked engines' curves; an aggregated pick's one engine gives both (the planner's agg
    model takes prefill and decode points alike)."""
    roles = {w.role: w for w in choice.workers}
    p, d = roles.get("prefill", roles.get("agg")), roles.get("decode", roles.get("agg"))
    if p is None or d is None:
        raise RuntimeError(f"no prefill/decode (or agg) engine in the pick: {sorted(roles)}")
    prefill = prefill_curve(est, p, prefill_isls(sweep.max_context, sweep.prefill_granularity))
    decode = decode_curve(est, d, decode_isls(sweep.max_context, sweep.decode_granularity, sweep.decode_osl), sweep)
    return Profile(prefill, decode)


def rapid_profile(req: Request, choice: Choice, sweep: SweepOptions,
                  est: Estimator | None = None) -> Profile | None:
    """The profile data (for the planner, the mockers) of an AIConfigurator pick, or None when AIConfigurator
    cannot estimate it (said in the notes, with what its readers do instead)."""
    try:
        profile = aic_profile(req.spec.model, req.spec.hardware.gpuSku or "h200_sxm", aic_backend(req), choice, sweep,
                              est)
    except Exception as exc:  # AIConfigurator's errors have no common type; the DGD stands without curves
        log.warning("rapid curves: %s: %s", type(exc).__name__, exc)
        choice.notes.append(f"no profile data: AIConfigurator could not estimate the picked engines ({exc}); "
                            f"{without_curves(req, choice.mode)}")
        return None
    engines = ", ".join(f"{w.role} TP{w.tp}" for w in choice.workers)
    choice.notes.append(f"profile data: AIConfigurator estimates, not measurements ({engines}: "
                        f"{len(profile.prefill.isl)} prefill points up to ISL {max(profile.prefill.isl):.0f}, "
                        f"{len(profile.decode.itl_ms)} decode points, KV capacity {profile.decode.max_kv_tokens} "
                        "tokens)")
    return profile


def aic_profile(model: str, system: str, backend: str, choice: Choice, sweep: SweepOptions,
                est: Estimator | None = None) -> Profile:
    """The picked engines' curves from AIConfigurator for `model` on `system`/`backend` (the planner's
    `aic_interpolation` start-up runs this too). Raises ImportError without AIConfigurator, and whatever
    AIConfigurator raises when it cannot estimate."""
    with _quiet_aic():
        return estimate_profile(est or AicEstimator(model, system, backend), choice, sweep)


@contextmanager
def _quiet_aic() -> Iterator[None]:
    """AIConfigurator logs each estimate at INFO: some fifty lines would bury the profiler's own."""
    loggers = [logging.getLogger(name) for name in ("aiconfigurator", "aiconfigurator_core")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class AicEstimator:
    """AIConfigurator's public estimate API (`cli_estimate` static modes, `estimate_kv_cache`) for one
    model (HF id or path), GPU SKU and backend; its perf database is loaded once and cached by AIC."""

    def __init__(self, model: str, system: str, backend: str) -> None:
        from aiconfigurator.cli.api import cli_estimate
        from aiconfigurator.sdk.memory import estimate_kv_cache

        self.model, self.system, self.backend = model, system, backend
        self._estimate, self._kv = cli_estimate, estimate_kv_cache

    def _parallel(self, w: WorkerChoice) -> dict[str, int | None]:
        return {"tp_size": w.tp, "pp_size": w.pp, "attention_dp_size": w.dp, "moe_tp_size": w.moe_tp,
                "moe_ep_size": w.moe_ep}

    def _run(self, mode: str, w: WorkerChoice, isl: int, osl: int, batch: int):
        return self._estimate(self.model, self.system, mode=mode, backend_name=self.backend, isl=isl, osl=osl,
                              batch_size=batch, **self._parallel(w))

    def ttft_ms(self, w: WorkerChoice, isl: int) -> float:
        return float(self._run("static_ctx", w, isl, PREFILL_OSL, 1).ttft)

    def itl_ms(self, w: WorkerChoice, isl: int, osl: int, batch: int) -> float:
        return float(self._run("static_gen", w, isl, osl, batch).tpot)

    def kv_tokens(self, w: WorkerChoice) -> int:
        """The engine's KV capacity in tokens: AIC's per-rank figure (with the backend's default memory
        fraction) times the attention-DP ranks, each of which holds its own cache."""
        from aiconfigurator.sdk.backends.factory import get_backend
        from aiconfigurator.sdk.perf_database import get_latest_database_version

        fraction = get_backend(self.backend).get_default_free_gpu_memory_fraction() or 0.9
        est = self._kv(self.model, self.system, self.backend, get_latest_database_version(self.system, self.backend),
                       max_num_tokens=w.max_num_batched_tokens or DEFAULT_BATCHED_TOKENS,
                       max_batch_size=w.max_num_seqs or DEFAULT_MAX_SEQS,
                       memory_fraction_kind="of_free" if self.backend == "trtllm" else "of_total",
                       memory_fraction_value=fraction, **self._parallel(w))
        return int(est["total_kv_size_tokens"]) * w.dp

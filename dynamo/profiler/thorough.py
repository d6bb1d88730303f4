"""Thorough search: deploy each candidate locally (through `dynamo.deploy run`), measure it with a
real client, and pick from the measurements. Prefill: TTFT at concurrency 1 across ISLs. Decode:
ITL and throughput across concurrency at several context lengths (each point run twice with the
same prompts, the first filling the prefix cache, as Dynamo does). Output: Dynamo's
interpolation files for the selected engines, per-candidate data, and the chosen sizing."""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dynamo.llm.perf_data import DecodeProfile, PrefillProfile, Profile, write_profile
from dynamo.profiler.client import measure
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd, component, components, main_container
from dynamo.profiler.dgd_v1alpha1 import WORKER_TYPES
from dynamo.profiler.dgdr import Request
from dynamo.profiler.interpolation import decode_isls, prefill_isls
from dynamo.profiler.local import LocalDeployment

log = logging.getLogger("dynamo.profiler")
MAX_DECODE_CONCURRENCY = 2000  # Dynamo's cap
KV_LOG = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")


@dataclass
class SweepOptions:
    model_dir: str | None = None
    max_context: int = 8192
    prefill_granularity: int = 16
    decode_granularity: int = 6
    decode_osl: int = 500
    concurrency_points: int = 6
    max_concurrency: int = MAX_DECODE_CONCURRENCY
    prefill_requests: int = 3
    speedup_ratio: float = 1.0  # mocker candidates' decode sweep runs this much faster, scaled back (`candidate_runs`)
    append_args: dict[str, list[str]] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # e.g. CPU core binding per engine
    ready_timeout: float = 3600.0  # Dynamo's --deployment-timeout
    deploy_python: str | None = None  # interpreter for `dynamo.deploy run` (default: this one)
    tp_sizes: list[int] = field(default_factory=lambda: [1])
    vocab_size: int | None = None


@dataclass
class Measured:
    tp: int
    profile: Profile


def _kv_capacity(dgd: dict[str, Any], logs: Path) -> int:
    """Decode engine KV capacity in tokens: the engine's own log line, else the mocker's flags."""
    for path in sorted(logs.glob("*Decode*.log")):
        found = KV_LOG.findall(path.read_text(errors="replace"))
        if found:
            return int(found[-1].replace(",", ""))
    argv = main_container(next(c for c in components(dgd) if c["name"].endswith("DecodeWorker")))["args"]

    def flag(name: str, default: int) -> int:
        return int(argv[argv.index(name) + 1]) if name in argv else default
    return flag("--num-gpu-blocks-override", 16384) * flag("--block-size", 64)


def concurrency_points(max_conc: int, points: int) -> list[int]:
    if max_conc <= 1 or points <= 1:
        return [1]
    return sorted({max(1, round(1 + (max_conc - 1) * i / (points - 1))) for i in range(points)})


def _retried(stats) -> str:
    return f" ({stats.retries} 'retry later' answer(s) retried)" if stats.retries else ""


async def sweep_prefill(dep: LocalDeployment, req: Request, opts: SweepOptions, gpus: int) -> PrefillProfile:
    isls, ttfts, thpts = [], [], []
    for isl in prefill_isls(opts.max_context, opts.prefill_granularity):
        stats = await measure(dep.url, req.spec.model, isl, 5, 1, opts.prefill_requests, seed=isl,
                              vocab_size=opts.vocab_size, warmup=1)
        if stats.errors or not stats.ttft_ms:
            raise RuntimeError(f"prefill sweep at ISL {isl} failed: {stats.errors[:3]}")
        ttft = stats.ttft  # measured in real time (`candidate_runs`): nothing to scale back
        isls.append(float(isl)), ttfts.append(ttft), thpts.append(isl / ttft * 1000.0 / gpus)
        log.info("prefill ISL %d: TTFT %.1f ms%s", isl, ttft, _retried(stats))
    return PrefillProfile(isls, ttfts, thpts)


async def sweep_decode(dep: LocalDeployment, req: Request, opts: SweepOptions, gpus: int,
                       max_kv: int, ratio: float = 1.0) -> DecodeProfile:
    """`ratio`: the speedup the engines run at; ITL and throughput are scaled back by it (a token's step is
    engine time only: the per-request overhead falls on TTFT, which this sweep does not report)."""
    osl = opts.decode_osl
    xs, ys, zs, ts = [], [], [], []
    for isl in decode_isls(opts.max_context, opts.decode_granularity, osl):
        ctx = isl + osl / 2
        top = min(max_kv // (isl + osl), opts.max_concurrency)
        for n in concurrency_points(max(top, 1), opts.concurrency_points):
            for _ in range(2):  # same seed twice: the first fills the prefix cache, the second is measured
                stats = await measure(dep.url, req.spec.model, isl, osl, n, n, seed=isl * 7919 + n,
                                      vocab_size=opts.vocab_size)
            if stats.errors or not stats.itl_ms:
                raise RuntimeError(f"decode sweep at ISL {isl}, concurrency {n} failed: {stats.errors[:3]}")
            itl = stats.itl * ratio
            xs.append(ctx * n / max_kv), ys.append(ctx), zs.append(itl)
            ts.append(stats.output_tps / ratio / gpus)
            log.info("decode ISL %d concurrency %d: ITL %.2f ms, %.0f tok/s/GPU%s", isl, n, itl, ts[-1],
                     _retried(stats))
    return DecodeProfile(xs, ys, zs, ts, max_kv_tokens=max_kv)


def local_deployment(dgd: dict[str, Any], work: Path, req: Request, opts: SweepOptions,
                     append: dict[str, list[str]] | None = None,
                     beside: list[dict[str, Any]] | None = None, **run: Any) -> LocalDeployment:
    """`dgd` deployed here with the machine-specific extras (engine flags, env such as CPU binding)
    added to a local copy only: the DGD handed to the user stays clean. `beside`: the file's other
    documents (the ConfigMaps the DGD mounts, which `run` serves at their mount paths); `run`: the
    LocalDeployment's `run_flags`, `control_port`, `console`."""
    dgd = copy.deepcopy(dgd)
    for name, env in opts.service_env.items():
        comp = component(dgd, name)
        if comp is not None:
            main_container(comp).setdefault("env", []).extend({"name": k, "value": v} for k, v in env.items())
    return LocalDeployment(dgd, work, opts.model_dir, req.spec.model, opts.append_args if append is None else append,
                           opts.ready_timeout, opts.deploy_python, beside, **run)


def candidate_dgd(req: Request, tp: int) -> dict[str, Any]:
    """One prefill and one decode engine at TP `tp`, fixed: the graph as the request would have it (its
    overrides apply) but without a Planner, which would rescale the engines being measured, and with one
    replica per worker whatever an override says. The final DGD keeps the Planner."""
    pair = Choice("disagg", [WorkerChoice("prefill", tp), WorkerChoice("decode", tp)], "measured")
    dgd = build_dgd(req, pair)  # the Planner is built, then dropped: an override may name it
    comps = components(dgd)
    comps[:] = [c for c in comps if c.get("type") != "planner"]
    for comp in comps:
        if comp.get("type") in WORKER_TYPES:
            comp["replicas"] = 1
            comp.pop("scalingAdapter", None)  # no planner scales it
    dgd["metadata"]["name"] = f"{dgd['metadata']['name'][:30]}-tp{tp}"
    return dgd


def candidate_runs(req: Request, opts: SweepOptions) -> list[tuple[tuple[str, ...], float]]:
    """The candidate's deployments, in order: (the sweeps each runs, its mockers' `--speedup-ratio`). A
    mocker's ratio divides its simulated engine time only: the time around it on each request (HTTP, the
    frontend, routing, the disaggregated hand-off; several ms on a loaded host) does not shrink, so a TTFT
    measured faster and multiplied back would carry that overhead times the ratio. The prefill sweep (a few
    requests per ISL at concurrency 1: seconds) therefore runs in real time, in a deployment of its own, and
    only the decode sweep, the long one, runs faster: its ITL is one engine step per token, which that
    overhead does not touch, and is scaled back. Real engines ignore the ratio."""
    ratio = opts.speedup_ratio if req.spec.mocker else 1.0
    if ratio == 1.0:
        return [(("prefill", "decode"), 1.0)]
    return [(("prefill",), 1.0), (("decode",), ratio)]


def _append(req: Request, opts: SweepOptions, ratio: float) -> dict[str, list[str]]:
    append = {k: list(v) for k, v in opts.append_args.items()}
    if req.spec.mocker:
        for svc in ("MockerPrefillWorker", "MockerDecodeWorker"):
            append.setdefault(svc, []).extend(["--speedup-ratio", str(ratio)])
    return append


async def measure_candidate(req: Request, tp: int, opts: SweepOptions, work: Path,
                            phase: Callable[[str], None]) -> Measured:
    dgd = candidate_dgd(req, tp)
    found: dict[str, Any] = {}
    for sweeps, ratio in candidate_runs(req, opts):
        where = work if "decode" in sweeps else work / "prefill-realtime"
        async with local_deployment(dgd, where, req, opts, _append(req, opts, ratio)) as dep:
            if "prefill" in sweeps:
                phase("SweepingPrefill")
                found["prefill"] = await sweep_prefill(dep, req, opts, tp)
            if "decode" in sweeps:
                phase("SweepingDecode")
                found["decode"] = await sweep_decode(dep, req, opts, tp, _kv_capacity(dgd, where / "logs"), ratio)
    profile = Profile(found["prefill"], found["decode"])
    write_profile(work, profile, configmap_json=False)
    return Measured(tp, profile)


def _targets(req: Request, prefill: PrefillProfile) -> tuple[float, float]:
    wl, sla = req.spec.workload, req.spec.sla
    if sla.e2eLatency is None:
        return sla.targets
    ttft = prefill.ttft(wl.isl)  # the end-to-end budget left after prefill goes to the decode steps
    return ttft, max((sla.e2eLatency - ttft) / max(wl.osl - 1, 1), 0.0)


def select(req: Request, measured: list[Measured]) -> tuple[Choice, Measured, Measured]:
    """Best prefill and best decode engine by throughput per GPU within the SLA; sized for the
    workload (or one each when the planner scales); never relaxes an SLA it cannot meet."""
    wl = req.spec.workload
    ctx = wl.isl + wl.osl / 2
    ttft_t, itl_t = _targets(req, measured[0].profile.prefill)
    pre = [(m, m.profile.prefill.ttft(wl.isl), m.profile.prefill.throughput_per_gpu(wl.isl)) for m in measured]
    ok = [p for p in pre if p[1] <= ttft_t]
    best_p = max(ok, key=lambda p: p[2]) if ok else min(pre, key=lambda p: p[1])
    dec = [(m, *m.profile.decode.best_throughput_per_gpu(itl_t, ctx)) for m in measured]
    ok_d = [d for d in dec if d[3] <= itl_t]
    best_d = max(ok_d, key=lambda d: d[1]) if ok_d else min(dec, key=lambda d: d[3])
    pm, ttft, p_thpt = best_p
    dm, d_thpt, kv_usage, itl = best_d
    per_engine = max(int(kv_usage * dm.profile.decode.max_kv_tokens / ctx), 1)
    p = WorkerChoice("prefill", pm.tp)
    d = WorkerChoice("decode", dm.tp, max_num_seqs=per_engine)
    notes: list[str] = []
    met = bool(ok) and bool(ok_d)
    if not ok:
        notes.append(f"TTFT target {ttft_t:.0f} ms cannot be met at ISL {wl.isl}: best measured {ttft:.1f} ms")
    if not ok_d:
        notes.append(f"ITL target {itl_t:.1f} ms cannot be met at context {ctx:.0f}: best measured {itl:.2f} ms")
    size(req, p, d, ttft, itl, p_thpt, per_engine, notes)
    expected = {"ttft_ms": ttft, "itl_ms": itl, "thpt_per_gpu": d_thpt, "prefill_thpt_per_gpu": p_thpt,
                "decode_concurrency_per_engine": per_engine}
    choice = Choice("disagg", [p, d], "measured", expected, sla_met=met, notes=notes)
    budget = req.spec.hardware.totalGpus
    if budget and choice.total_gpus > budget:
        choice.notes.append(f"the stated load needs {choice.total_gpus} GPUs, over the budget of {budget}")
        choice.sla_met = False
    return choice, pm, dm


def size(req: Request, p: WorkerChoice, d: WorkerChoice, ttft: float, itl: float, p_thpt: float,
         per_engine: int, notes: list[str]) -> None:
    wl = req.spec.workload
    if req.spec.planner:
        notes.append("planner enabled: one worker per pool, the planner scales them")
        return
    latency_s = (ttft + wl.osl * itl) / 1000.0
    if wl.concurrency is not None or wl.requestRate is not None:
        conc = wl.concurrency if wl.concurrency is not None else wl.requestRate * latency_s
        rate = wl.requestRate if wl.requestRate is not None else wl.concurrency / latency_s
        d.replicas = max(math.ceil(conc / per_engine), 1)
        p.replicas = max(math.ceil(rate * wl.isl / (p_thpt * p.gpus)), 1) if p_thpt > 0 else 1
        notes.append(f"load {conc:.1f} concurrent / {rate:.2f} req/s: {p.replicas} prefill, {d.replicas} decode")
        return
    budget = req.spec.hardware.totalGpus or (p.gpus + d.gpus)
    units = max(budget // (p.gpus + d.gpus), 1)
    p.replicas = d.replicas = units

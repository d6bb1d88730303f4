"""Rapid search: AIConfigurator's offline simulation picks agg vs disagg, parallelism, batch
limits and replicas for the GPU SKU and SLA; a model or SKU it does not cover falls back to a
memory-fit aggregated config whose SLA is explicitly unverified."""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dynamo.profiler.dgd import Choice, WorkerChoice
from dynamo.profiler.dgdr import Request

log = logging.getLogger("dynamo.profiler")

EXTRA_HINT = "pip install 'dynamo-serve[profiler]' (AIConfigurator 0.12.0)"
AIC_TIMEOUT_S = 900
# Usable memory per GPU in GB by SKU (HBM size), for the memory-fit fallback.
VRAM_GB = {"vr_nvl72": 288, "gb200": 186, "b300_sxm": 288, "b200_sxm": 180, "h200_sxm": 141, "h100_sxm": 80,
           "h100_pcie": 80, "a100_sxm": 80, "a100_pcie": 80, "a30": 24, "l40s": 48, "l40": 48, "l4": 24,
           "v100_sxm": 32, "v100_pcie": 32, "t4": 16, "mi200": 64, "mi300": 192, "gb10": 128}
WEIGHT_SHARE = 0.6  # weights may take this share of a GPU; the rest is KV cache and activations


class AicUnavailable(RuntimeError):
    """AIConfigurator is not installed (the `profiler` extra)."""


class AicUnsupported(RuntimeError):
    """AIConfigurator ran but does not cover this model / SKU / backend."""


class AicInfeasible(RuntimeError):
    """AIConfigurator covers the model but no configuration meets the SLA."""

INFEASIBLE = "no SLA-feasible configuration"
RELAXED_MS = 1e7  # an SLA loose enough that every configuration qualifies: the search then shows what is achievable


def aic_backend(req: Request) -> str:
    return req.spec.backend if req.spec.backend != "auto" else "vllm"


def aic_command(req: Request, save_dir: Path, relaxed: bool = False) -> list[str]:
    s = req.spec
    hw, wl = s.hardware, s.workload
    ttft, itl = s.sla.targets
    cmd = [sys.executable, "-m", "aiconfigurator.main", "cli", "default", "--model-path", s.model,
           "--system", hw.gpuSku or "h200_sxm", "--backend", aic_backend(req),
           "--total-gpus", str(hw.totalGpus or 8), "--isl", str(wl.isl), "--osl", str(wl.osl),
           "--save-dir", str(save_dir), "--top-n", "3", "--no-color"]
    if relaxed:
        cmd += ["--ttft", str(RELAXED_MS), "--tpot", str(RELAXED_MS)]
    elif s.sla.e2eLatency is not None:
        cmd += ["--request-latency", str(s.sla.e2eLatency)]
    else:
        cmd += ["--ttft", str(ttft), "--tpot", str(itl)]
    if not s.planner:  # autoscale picking leaves the load to the planner
        if wl.concurrency is not None:
            cmd += ["--target-concurrency", str(wl.concurrency)]
        elif wl.requestRate is not None:
            cmd += ["--target-request-rate", str(wl.requestRate)]
    return cmd


def run_aic(req: Request, work: Path, relaxed: bool = False,
            table: str = "best_config_topn.csv") -> dict[str, list[dict[str, str]]]:
    """Run AIConfigurator; the ranked rows of each experiment (`agg`, `disagg`) from `table`."""
    try:
        import aiconfigurator  # noqa: F401
    except ImportError:
        raise AicUnavailable(f"rapid profiling needs AIConfigurator: {EXTRA_HINT}") from None
    work.mkdir(parents=True, exist_ok=True)
    cmd = aic_command(req, work / "aic", relaxed)
    log.info("rapid: %s", " ".join(cmd[1:]))
    with open(work / "aiconfigurator.log", "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=AIC_TIMEOUT_S).returncode
    text = (work / "aiconfigurator.log").read_text(errors="replace")
    if rc != 0:
        if INFEASIBLE in text:
            raise AicInfeasible(next(line for line in text.splitlines() if INFEASIBLE in line).strip())
        errors = [line for line in text.splitlines() if "error" in line.lower()]
        raise AicUnsupported((errors[-1] if errors else f"aiconfigurator exited {rc}").strip())
    results: dict[str, list[dict[str, str]]] = {}
    for csv_path in sorted((work / "aic").rglob(table)):
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows:
            results[csv_path.parent.name] = rows
    if not results:
        raise AicUnsupported("AIConfigurator found no configuration for this model, SKU and SLA")
    return results


def _f(row: dict[str, str], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else 0.0


def _moe(row: dict[str, str], prefix: str) -> dict[str, int | None]:
    """The pick's MoE parallelism (`moe_tp`, `moe_ep`); AIConfigurator writes `None` for a dense model."""
    out: dict[str, int | None] = {}
    for key in ("moe_tp", "moe_ep"):
        value = row.get(f"{prefix}{key}", "")
        out[key] = int(float(value)) if value not in ("", None, "None", "nan") else None
    return out


def choice_from_rows(req: Request, results: dict[str, list[dict[str, str]]]) -> Choice:
    """Pick the best experiment (highest tokens/s/GPU, as AIConfigurator does) and size it; with the
    planner on, the disaggregated one (Dynamo's autoscale picking: the planner scales prefill and
    decode apart)."""
    ranked = {"disagg": results["disagg"]} if req.spec.planner and results.get("disagg") else results
    mode, row = max(((m, rows[0]) for m, rows in ranked.items()), key=lambda mr: _f(mr[1], "tokens/s/gpu"))
    budget = req.spec.hardware.totalGpus or 8
    load_target = (req.spec.workload.concurrency or req.spec.workload.requestRate) is not None
    if mode == "agg":
        w = WorkerChoice("agg", int(_f(row, "tp")), int(_f(row, "pp")) or 1, int(_f(row, "dp")) or 1,
                         max_num_seqs=int(_f(row, "bs")) or None, **_moe(row, ""))
        per_unit = int(_f(row, "num_total_gpus")) or w.gpus
        w.replicas = max(per_unit // w.gpus, 1)
        workers = [w]
    else:
        p = WorkerChoice("prefill", int(_f(row, "(p)tp")), int(_f(row, "(p)pp")) or 1, int(_f(row, "(p)dp")) or 1,
                         replicas=int(_f(row, "(p)workers")) or 1, max_num_seqs=int(_f(row, "(p)bs")) or None,
                         **_moe(row, "(p)"))
        d = WorkerChoice("decode", int(_f(row, "(d)tp")), int(_f(row, "(d)pp")) or 1, int(_f(row, "(d)dp")) or 1,
                         replicas=int(_f(row, "(d)workers")) or 1, max_num_seqs=int(_f(row, "(d)bs")) or None,
                         **_moe(row, "(d)"))
        workers = [p, d]
    unit = sum(w.gpus * w.replicas for w in workers)
    as_picked = [w.replicas for w in workers]
    if req.spec.planner:  # autoscale: one worker per pool, the planner scales
        for w in workers:
            w.replicas = 1
    elif not load_target and unit < budget:  # default picking: fill the budget with whole units
        for w in workers:
            w.replicas *= budget // unit
    s_ttft, s_itl = req.spec.sla.targets
    expected, scaled = deployed_figures(row, workers, as_picked)
    if req.spec.sla.e2eLatency is not None:
        met = expected["request_latency_ms"] <= req.spec.sla.e2eLatency
    else:
        met = expected["ttft_ms"] <= s_ttft and expected["itl_ms"] <= s_itl
    choice = Choice(mode, workers, "aiconfigurator", expected, sla_met=met)
    others = {m: round(_f(rows[0], "tokens/s/gpu"), 1) for m, rows in results.items()}
    why = " (the planner scales prefill and decode apart)" if ranked is not results else ""
    choice.notes.append(f"AIConfigurator tokens/s/GPU by mode: {json.dumps(others)}; picked {mode}{why}")
    if scaled:
        choice.notes.append(scaled)
    if choice.total_gpus > budget:
        choice.notes.append(f"needs {choice.total_gpus} GPUs for the stated load, over the budget of {budget}")
        choice.sla_met = False
    return choice


def _shape(workers: list[WorkerChoice], replicas: list[int]) -> str:
    return "+".join(f"{n}x{w.role} TP{w.tp}" for w, n in zip(workers, replicas))


def deployed_figures(row: dict[str, str], workers: list[WorkerChoice],
                     as_picked: list[int]) -> tuple[dict[str, float], str | None]:
    """The expected figures of the deployment generated, and a note when they differ from AIConfigurator's.
    Its row describes the workers it picked (`as_picked`, e.g. 3 prefill + 5 decode on 8 GPUs); the DGD may
    have fewer (the planner's one per pool) or more (the budget filled). Latencies and per-user rates hold;
    the request rate scales with the scarcest pool, the concurrency with the decode (or agg) pool, the
    throughput per GPU follows."""
    rate_k = min(w.replicas / n for w, n in zip(workers, as_picked))
    conc_k = workers[-1].replicas / as_picked[-1]  # decode (disagg), or the one agg pool
    picked_gpus = sum(w.gpus * n for w, n in zip(workers, as_picked))
    gpus = sum(w.gpus * w.replicas for w in workers)
    tokens = _f(row, "tokens/s") or _f(row, "tokens/s/gpu") * picked_gpus
    expected = {"ttft_ms": _f(row, "ttft"), "itl_ms": _f(row, "tpot"), "request_latency_ms": _f(row, "request_latency"),
                "thpt_per_gpu": tokens * rate_k / gpus, "tokens_per_s_per_user": _f(row, "tokens/s/user"),
                "request_rate": _f(row, "request_rate") * rate_k, "concurrency": _f(row, "concurrency") * conc_k}
    if rate_k == 1 and conc_k == 1:
        return expected, None
    return expected, (f"expected figures are this DGD's ({_shape(workers, [w.replicas for w in workers])}, {gpus} "
                      f"GPU(s)); AIConfigurator's are for its pick {_shape(workers, as_picked)} on {picked_gpus} "
                      f"GPU(s): request_rate {_f(row, 'request_rate'):.4g}, concurrency {_f(row, 'concurrency'):.4g}, "
                      f"thpt_per_gpu {_f(row, 'tokens/s/gpu'):.4g}")


# ---- memory-fit fallback ------------------------------------------------------------------

def model_params_b(req: Request, model_dir: str | None) -> float | None:
    """Parameters in billions: from config.json when we have one, else from the name (`…-7B`)."""
    cfg_path = Path(model_dir) / "config.json" if model_dir else None
    if cfg_path and cfg_path.is_file():
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
        cfg = {**cfg, **(cfg.get("text_config") or {})}
        h, layers, vocab = cfg.get("hidden_size"), cfg.get("num_hidden_layers"), cfg.get("vocab_size")
        inter = cfg.get("intermediate_size") or (4 * h if h else None)
        if h and layers and vocab and inter:
            return (layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h) / 1e9
    m = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", req.spec.model)
    return float(m.group(1)) if m else None


def memory_fit(req: Request, model_dir: str | None, reason: str) -> Choice:
    hw = req.spec.hardware
    vram_gb = (hw.vramMb / 1024) if hw.vramMb else VRAM_GB.get(hw.gpuSku or "", 80)
    per_node = hw.numGpusPerNode or 8
    budget = hw.totalGpus or per_node
    params = model_params_b(req, model_dir)
    notes = [f"SLA UNVERIFIED: {reason}; using a memory-fit aggregated config"]
    tp = 1
    if params is None:
        notes.append("model size unknown (no config.json, no size in the name): assuming it fits one GPU")
    else:
        weights_gb = params * 2  # 16-bit weights
        while tp < per_node and weights_gb > vram_gb * WEIGHT_SHARE * tp:
            tp *= 2
        notes.append(f"~{params:.1f}B parameters, {weights_gb:.0f} GB of weights, {vram_gb:.0f} GB per GPU → TP{tp}")
    replicas = max(min(budget, per_node * max(budget // per_node, 1)) // tp, 1)
    if req.spec.planner:
        replicas = 1
    return Choice("agg", [WorkerChoice("agg", tp, replicas=replicas)], "memory-fit", {}, sla_met=None, notes=notes)


def best_effort(req: Request, work: Path, why: str) -> Choice:
    """The SLA cannot be met: the lowest-latency configuration AIConfigurator knows, reported as
    missing the SLA with the best achievable figures (never a silently relaxed target)."""
    results = run_aic(req, work / "relaxed", relaxed=True, table="pareto.csv")
    rows = [(m, r) for m, rs in results.items() for r in rs]
    best_ttft = min(_f(r, "ttft") for _, r in rows)
    best_itl = min(_f(r, "tpot") for _, r in rows)
    ttft_t, itl_t = req.spec.sla.targets
    key = "tpot" if best_itl > itl_t else "ttft"
    mode, row = min(rows, key=lambda mr: (_f(mr[1], key), -_f(mr[1], "tokens/s/gpu")))
    choice = choice_from_rows(req, {mode: [row]})
    choice.sla_met = False
    choice.notes.insert(0, f"SLA CANNOT BE MET ({why}): best achievable TTFT {best_ttft:.1f} ms (target "
                           f"{ttft_t:g}), ITL {best_itl:.2f} ms (target {itl_t:g}); the DGD is the lowest-{key} config")
    return choice


def rapid(req: Request, work: Path, model_dir: str | None) -> Choice:
    try:
        return choice_from_rows(req, run_aic(req, work))
    except AicInfeasible as exc:
        return best_effort(req, work, str(exc).split("] ")[-1])
    except AicUnsupported as exc:
        log.warning("AIConfigurator does not cover %s on %s: %s", req.spec.model, req.spec.hardware.gpuSku, exc)
        return memory_fit(req, model_dir, f"AIConfigurator does not cover this model/SKU ({exc})")

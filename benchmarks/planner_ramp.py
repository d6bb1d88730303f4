"""The SLA planner under a load that rises and falls, against fixed graphs.

A disaggregated mocker graph (`examples/backends/mocker/deploy/disagg.yaml` through
`python -m dynamo.deploy run`) receives an open-loop Poisson load whose rate goes
low -> peak -> low. Three configurations, one after the other:

- `fixed 1P+1D`: the manifest as is;
- `fixed peak`: sized for the peak (`--peak-prefill`/`--peak-decode` replicas);
- `planner`: starts at 1P+1D; `python -m dynamo.planner` (target `sla`, local connector,
  a real Prometheus scraping the frontend for the throughput loop) scales it.

Per configuration: SLA attainment (share of requests with TTFT <= --ttft-ms and mean ITL
<= --itl-ms), failed requests, and worker replica-seconds (prefill + decode processes
alive, sampled every second). A PNG shows replicas and TTFT over time.

    .venv/bin/python benchmarks/planner_ramp.py [--low 2 --peak 16] [--phases 20,45,45,45,30] [--png FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import pct, print_table
from dynamo.llm.tiny_model import build_tiny_model
from dynamo.profiler.client import sse_chunk
from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import Proc
from tests.planner.helpers import deploy_kv_dir
from tests.planner.prometheus_server import PrometheusServer

MANIFEST = Path(__file__).resolve().parents[1] / "examples/backends/mocker/deploy/disagg.yaml"
NAMESPACE = "default-mocker-disagg"  # what `deploy run` gives the DGD `mocker-disagg`
WORKERS = ("MockerPrefillWorker", "MockerDecodeWorker")
MODEL = "tiny-llama"


def rate_at(t: float, low: float, peak: float, phases: list[float]) -> float:
    """Piecewise-linear schedule: low, ramp up, hold peak, ramp down, low."""
    edges, acc = [], 0.0
    for p in phases:
        acc += p
        edges.append(acc)
    if t < edges[0]:
        return low
    if t < edges[1]:
        return low + (peak - low) * (t - edges[0]) / phases[1]
    if t < edges[2]:
        return peak
    if t < edges[3]:
        return peak - (peak - low) * (t - edges[2]) / phases[3]
    return low


def arrivals(low: float, peak: float, phases: list[float], seed: int) -> list[float]:
    """Poisson arrival times for the time-varying rate (thinning)."""
    rng, t, out, total = random.Random(seed), 0.0, [], sum(phases)
    while True:
        t += rng.expovariate(peak)
        if t >= total:
            return out
        if rng.random() < rate_at(t, low, peak, phases) / peak:
            out.append(t)


async def one_request(session, url: str, body: dict, start: float, records: list) -> None:
    sent = time.monotonic()
    first = last = None
    tokens = 0
    ok = False
    try:
        async with session.post(url, json=body) as resp:
            if resp.status == 200:
                async for raw in resp.content:
                    chunk = sse_chunk(raw)
                    if chunk is None:
                        continue
                    if chunk.get("error"):
                        break
                    choices = chunk.get("choices") or []
                    if choices and choices[0].get("text"):
                        last = time.monotonic()
                        first = first or last
                        tokens += 1
                    if choices and choices[0].get("finish_reason"):
                        ok = choices[0]["finish_reason"] in ("length", "stop")
            else:
                await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        ok = False
    ttft = (first - sent) if first else None
    itl = (last - first) / (tokens - 1) if first and tokens > 1 else None
    records.append({"t": sent - start, "ok": ok and first is not None, "ttft": ttft, "itl": itl})


async def drive(port: int, args, vocab: int, on_tick) -> list[dict]:
    url = f"http://127.0.0.1:{port}/v1/completions"
    times = arrivals(args.low, args.peak, args.phase_list, args.seed)
    rng = random.Random(args.seed)
    records: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        start = time.monotonic()
        ticker = asyncio.create_task(on_tick(start))
        tasks = []
        for at in times:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"model": MODEL, "prompt": [rng.randrange(10, vocab) for _ in range(args.isl)],
                    "max_tokens": args.osl, "stream": True}
            tasks.append(asyncio.create_task(one_request(session, url, body, start, records)))
        await asyncio.gather(*tasks)
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    return records


def run_config(name: str, replicas: tuple[int, int], planner: bool, model: Path, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"dynamo-planner-ramp-{name.split()[0]}-"))
    worker_flags = (f"--speedup-ratio {args.speedup} --num-gpu-blocks-override {args.blocks} --block-size 16 "
                    f"--max-num-seqs 64")
    run = DeployRun(MANIFEST, tmp, "--model", str(model), "--no-status",
                    "--set", f"MockerPrefillWorker.replicas={replicas[0]}",
                    "--set", f"MockerDecodeWorker.replicas={replicas[1]}",
                    "--append-args", f"MockerPrefillWorker={worker_flags}",
                    "--append-args", f"MockerDecodeWorker={worker_flags}", env={"DYN_LOG": "warn"})
    prom = planner_proc = None
    timeline: list[tuple[float, int, int]] = []
    try:
        run.wait_ready({"Frontend": 1, WORKERS[0]: replicas[0], WORKERS[1]: replicas[1]}, timeout=180)
        run.wait_workers(MODEL, sum(replicas), timeout=120)
        if planner:
            prom = PrometheusServer(tmp / "prometheus", [f"127.0.0.1:{run.port}"], NAMESPACE)
            env = {"DYN_FILE_KV": deploy_kv_dir(run.log_path), "DYN_DISCOVERY_BACKEND": "file", "DYN_LOG": "info"}
            planner_proc = Proc("dynamo.planner", ["--config", json.dumps(planner_config(run.control, prom.url, args))],
                                env, tmp, "planner")
        warm = asyncio.run(drive_warmup(run.port, args))  # creates the frontend's metric series

        async def sample(start: float) -> None:
            while True:
                reps = await asyncio.to_thread(run.status)
                alive = [r for r in reps["replicas"] if r["service"] in WORKERS and r["pid"]]
                timeline.append((time.monotonic() - start, sum(r["service"] == WORKERS[0] for r in alive),
                                 sum(r["service"] == WORKERS[1] for r in alive)))
                await asyncio.sleep(1.0)

        records = asyncio.run(drive(run.port, args, 4000, sample))
        return summarize(name, records, timeline, args, warm, tmp)
    finally:
        if planner_proc is not None:
            planner_proc.stop()
        if prom is not None:
            prom.stop()
        run.stop()


async def drive_warmup(port: int, args) -> int:
    url = f"http://127.0.0.1:{port}/v1/completions"
    records: list[dict] = []
    async with aiohttp.ClientSession() as session:
        for i in range(3):
            await one_request(session, url, {"model": MODEL, "prompt": [11 + i] * args.isl, "max_tokens": args.osl,
                                             "stream": True}, time.monotonic(), records)
    await asyncio.sleep(3)
    return sum(r["ok"] for r in records)


def planner_config(control: str, prom_url: str, args) -> dict:
    return {"environment": "local", "namespace": NAMESPACE, "backend": "mocker", "mode": "disagg",
            "optimization_target": "sla", "ttft_ms": args.planner_ttft_ms or args.ttft_ms,
            "itl_ms": args.planner_itl_ms or args.itl_ms,
            "control_url": control, "prometheus_endpoint": prom_url, "load_predictor": args.predictor,
            "load_adjustment_interval_seconds": args.load_interval,
            "throughput_adjustment_interval_seconds": args.throughput_interval,
            "min_endpoint": 1, "max_endpoint": args.max_replicas, "max_gpu_budget": args.budget,
            "replica_ready_timeout_seconds": 120}


def summarize(name: str, records: list[dict], timeline, args, warm: int, tmp: Path) -> dict:
    ok = [r for r in records if r["ok"]]
    good = [r for r in ok if r["ttft"] <= args.ttft_ms / 1e3 and (r["itl"] is None or r["itl"] <= args.itl_ms / 1e3)]
    replica_s = sum(p + d for _, p, d in timeline) * 1.0  # one sample per second
    return {"name": name, "requests": len(records), "failed": len(records) - len(ok),
            "attainment": 100.0 * len(good) / max(len(records), 1),
            "ttft_p50": pct([r["ttft"] for r in ok], 0.5) * 1e3, "ttft_p99": pct([r["ttft"] for r in ok], 0.99) * 1e3,
            "itl_p50": pct([r["itl"] for r in ok if r["itl"]], 0.5) * 1e3,
            "itl_p99": pct([r["itl"] for r in ok if r["itl"]], 0.99) * 1e3,
            "replica_s": replica_s, "max_replicas": max((p + d for _, p, d in timeline), default=0),
            "records": records, "timeline": timeline, "logs": str(tmp)}


def plot(results: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for res in results:
        ts = [t for t, _, _ in res["timeline"]]
        ax1.step(ts, [p + d for _, p, d in res["timeline"]], where="post", label=f"{res['name']} (P+D)")
        pts = sorted((r["t"], r["ttft"] * 1e3) for r in res["records"] if r["ok"])
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], ".", markersize=2, label=res["name"])
    total = sum(args.phase_list)
    ax1b = ax1.twinx()
    grid = [i * total / 200 for i in range(201)]
    ax1b.plot(grid, [rate_at(t, args.low, args.peak, args.phase_list) for t in grid], "k--", lw=0.8)
    ax1b.set_ylabel("offered req/s (dashed)")
    ax1.set_ylabel("worker replicas")
    ax1.legend(loc="upper left")
    ax2.axhline(args.ttft_ms, color="r", lw=0.8, ls=":")
    ax2.set_yscale("log")
    ax2.set_ylabel("TTFT ms (log)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="upper left", markerscale=5)
    fig.suptitle(f"planner_ramp: {args.low}->{args.peak}->{args.low} req/s, ISL {args.isl}, OSL {args.osl}, "
                 f"SLA TTFT {args.ttft_ms} ms / ITL {args.itl_ms} ms")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"\nplot: {args.png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--low", type=float, default=2.0)
    p.add_argument("--peak", type=float, default=16.0)
    p.add_argument("--phases", default="20,45,45,45,30", help="seconds: low, ramp up, peak, ramp down, low")
    p.add_argument("--isl", type=int, default=256)
    p.add_argument("--osl", type=int, default=32)
    p.add_argument("--ttft-ms", type=float, default=200.0)
    p.add_argument("--itl-ms", type=float, default=25.0)
    p.add_argument("--planner-ttft-ms", type=float, default=None,
                   help="the planner's engine-side TTFT target (default: --ttft-ms)")
    p.add_argument("--planner-itl-ms", type=float, default=None,
                   help="the planner's engine-side ITL target (default: --itl-ms); lower it by the serving path's "
                        "own per-token cost, which the engine's forward-pass metrics do not see")
    p.add_argument("--json", default=None, help="write per-config summaries and timelines here")
    p.add_argument("--blocks", type=int, default=256, help="KV blocks (16 tokens) per mocker")
    p.add_argument("--speedup", default="1")
    p.add_argument("--peak-prefill", type=int, default=1)
    p.add_argument("--peak-decode", type=int, default=3)
    p.add_argument("--max-replicas", type=int, default=4)
    p.add_argument("--budget", type=int, default=6)
    p.add_argument("--predictor", default="kalman")
    p.add_argument("--load-interval", type=float, default=3)
    p.add_argument("--throughput-interval", type=float, default=15)
    p.add_argument("--configs", default="fixed,peak,planner")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--png", default="planner_ramp.png")
    args = p.parse_args()
    args.phase_list = [float(x) for x in args.phases.split(",")]
    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="dynamo-model-")) / "tiny-llama", weights=False)
    plans = {"fixed": ("fixed 1P+1D", (1, 1), False),
             "peak": (f"fixed {args.peak_prefill}P+{args.peak_decode}D", (args.peak_prefill, args.peak_decode), False),
             "planner": ("planner", (1, 1), True)}
    results = []
    for key in args.configs.split(","):
        name, reps, planner = plans[key]
        res = run_config(name, reps, planner, model, args)
        print(f"{name}: {res['requests']} requests, attainment {res['attainment']:.1f}%, failed {res['failed']}, "
              f"{res['replica_s']:.0f} replica-s (logs {res['logs']})", flush=True)
        results.append(res)
    print_table(f"planner_ramp: {args.low}->{args.peak}->{args.low} req/s over {sum(args.phase_list):.0f}s, "
                f"ISL {args.isl}, OSL {args.osl}, SLA TTFT<={args.ttft_ms:g}ms ITL<={args.itl_ms:g}ms",
                ("config", "requests", "SLA attainment %", "failed", "replica-s", "max replicas",
                 "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"),
                [(r["name"], r["requests"], r["attainment"], r["failed"], r["replica_s"], r["max_replicas"],
                  r["ttft_p50"], r["ttft_p99"], r["itl_p50"], r["itl_p99"]) for r in results])
    plot(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "records"} for r in results]))


if __name__ == "__main__":
    main()

"""Routing quality: KV-aware routing vs round-robin vs random, ours and NVIDIA Dynamo's side
by side, on the workload shapes users run.

Workloads (`--workload`; each sets defaults the flags can override):
- `groups` (the anchor workload, shared/reference/anchor-dynamo.md): 16 groups of
  ~1,150-token prefixes + 30-token suffixes, concurrency 16, 2 mockers x 200 blocks of 64,
  so the two caches together hold every prefix but neither holds them all;
- `long-prefix`: system prompts / RAG documents: 8 groups of 5,000-token prefixes,
  concurrency 24 (near saturation), caches holding about half the groups each;
- `rag`: 12 documents of 4,000-8,000 tokens, a 60-token question each, concurrency 16;
- `multi-turn`: conversations that grow: every user runs conversations one turn at a
  time, each turn's prompt = the previous turn's prompt + its answer + a new message, so a
  conversation's next turn finds its history cached only where the last turn ran. Its
  table adds the follow-up turns' TTFT: the first turns (a sixth of the requests, cold prompts
  that no router can find cached, and all sent at once by users that start together) set the
  p99 of every mode alike, so the follow-ups are where routing shows;
- `agentic`: `multi-turn` with agent-length histories (a 3,000-token system prompt and tool
  definitions to start, ~4,000 tokens by the last turn), so that re-prefilling a history the
  router sent elsewhere costs more than the running decode step; caches hold about 60% of it;
- `mixed`: half `groups` traffic, half unique prompts (nothing to reuse); its table adds the
  shared-prefix requests' TTFT, the half a router can place by cache;
- `system-prompt`: one chat app: every request starts with the same 2,000-token system prompt, then a
  user message of 50-2,000 tokens (seeded): the prefix is soon cached on both workers, so what is left
  to route on is load (the prefill each request brings, the decode each worker runs);
- `vllm-prefix` with `--engine vllm`: two real `dynamo.vllm` workers (vLLM's CPU build, the
  tiny random-weight Llama, prefix caching and KV events on) behind our frontend, 16 groups
  of 1,500-token prefixes (the model's context is 2,048); needs the vLLM venv
  (scripts/install_vllm_cpu.sh, `DYN_VLLM_VENV`). Ours only: the anchor has no CPU vLLM. The engines
  start once; every run gets a fresh frontend and prompts of its own (new seed), so no run
  finds another's prefixes cached.
Streaming completions through the frontend against 2 real-time mockers (`--speedup-ratio
1`); every run gets fresh processes (cold caches) and the same requests. `--stacks ours
anchor` runs NVIDIA Dynamo 1.6.1 (.venv-anchor, scripts/install_anchor_dynamo.sh) in the same
invocation; `--rounds N` repeats everything, alternating stack and mode inside each round
so that a busy machine hurts all alike, and reports the median with the spread (min-max).
Users are a closed loop by default: users that start together stay in step and reach the workers
in bursts; `--think-ms T` gives each user seeded pauses of U(0, T) ms before each request (the same
pauses for every stack and mode), as people reading answers do. `--rates R [R ...]` runs an open
loop instead (not for the conversation workloads, whose turns wait for answers): the same prompts
at seeded Poisson arrivals of R requests/s, whether or not earlier ones have answered, so every
stack and mode sees the same offered load. A closed loop gives a faster stack more load (it
answers sooner, so its users ask sooner); at equal rates TTFTs compare like for like, and a row
per rate traces TTFT against load up to saturation.
`--sessions` makes every request name its prompt family (a conversation, a shared prefix) in
`x-dynamo-session-id`, for modes that turn session affinity on, on either stack:
"round-robin:--router-session-affinity-ttl-secs 300".
Mode `pinned` is a reference, not a router: every request names its worker
(`nvext.backend_instance_id`), each prompt family (shared prefix, conversation) dealt to one
worker in turn: perfect cache affinity, families balanced by count, blind to load. Where kv
matches it, what is left of TTFT is the engine's, not the routing's.
Diagnostics per run: CPU ms per request of the frontend and each worker; how late our mockers'
steps ran against their timing model (busy / simulated wall time - 1); the mean TTFT seen by the
client, by the frontend (its own histogram, both stacks) and inside our mockers (arrival to first
token), which splits a stack's TTFT into engine time and frontend / request-plane time.
`--trace DIR` writes every run's requests as CSV (send time, user#turn/family, the worker that
served it, cached tokens, TTFT), to see which requests make a percentile and where they went.

    .venv/bin/python benchmarks/routing_quality.py --workload long-prefix --stacks ours anchor --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Collection

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import Result, cpu_seconds, pct, print_table, run_open_loop, stream_one
from benchmarks.routing_workloads import TRACKED, WORKLOADS, families, pinning, tracked, users
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

ROOT = Path(__file__).resolve().parents[1]
# flags NVIDIA Dynamo's frontend lacks: a mode using them runs on our stack only
OURS_ONLY_FLAGS = ("--router-cost-model", "--router-inflight-prefix-credit", "--router-output-blocks-horizon",
                   "--router-queue-max-requests", "--router-queue-timeout-secs", "--active-prefill-tokens-threshold-frac",
                   "--router-shared-prefix-amortization")


async def run_users(url: str, plan: list[list[list[int]]], max_tokens: int, think_ms: float = 0.0,
                    seed: int = 0, pins: dict[tuple[int, ...], int] | None = None,
                    later: Collection[tuple[int, int]] = (), follow_ttft: list[float] | None = None,
                    sessions: bool = False, trace: bool = False) -> Result:
    """`follow_ttft`, when given, also collects the TTFTs of the requests in `later` (user, index);
    `trace` keeps a row per request in `result.trace`, tagged user#index/family."""
    result = Result()
    result.trace = [] if trace else None
    family = families(plan)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await stream_one(session, url, {"model": "tiny", "prompt": [7] * 40, "max_tokens": 2}, Result())

        async def user(u: int, prompts: list[list[int]], pause: random.Random) -> None:
            for i, prompt in enumerate(prompts):
                if think_ms > 0:  # a person reads the answer before the next turn (same pauses, every stack)
                    await asyncio.sleep(pause.uniform(0, think_ms) / 1e3)
                body = request_body(prompt, max_tokens, pins, sessions, trace_tag(family, u, i, prompt))
                ttft = await stream_one(session, url, body, result)
                if follow_ttft is not None and (u, i) in later and ttft is not None:
                    follow_ttft.append(ttft)

        start = time.perf_counter()
        await asyncio.gather(*(user(u, p, random.Random(seed * 1000 + u)) for u, p in enumerate(plan)))
        result.elapsed = time.perf_counter() - start
    return result


def trace_tag(family: dict[tuple[int, ...], int], user: int, index: int, prompt: list[int]) -> str:
    """A request's label in a trace: user#index/family."""
    return f"u{user}#{index}/f{family[tuple(prompt[:64])]}"


def request_body(prompt: list[int], max_tokens: int, pins: dict[tuple[int, ...], int] | None,
                 sessions: bool = False, tag: str | None = None) -> dict:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
    if tag is not None:
        body["_tag"] = tag  # stream_one's, not sent
    if pins is not None:
        body["nvext"] = {"backend_instance_id": pins[tuple(prompt[:64])]}
    if sessions:  # the family (first 64 tokens: a conversation, a shared prefix) is the session
        body["_headers"] = {"x-dynamo-session-id": f"family-{hash(tuple(prompt[:64])) & 0xFFFFFFFF:08x}"}
    return body


async def run_rate(url: str, plan: list[list[list[int]]], max_tokens: int, rate: float, seed: int = 0,
                   pins: dict[tuple[int, ...], int] | None = None, later: Collection[tuple[int, int]] = (),
                   follow_ttft: list[float] | None = None, sessions: bool = False, trace: bool = False) -> Result:
    """The plan's prompts in the order `run_users` first sends them, as an open loop at `rate`/s."""
    order = [(u, i) for i, prompts in enumerate(itertools.zip_longest(*plan))
             for u, prompt in enumerate(prompts) if prompt is not None]
    result = Result()
    result.trace = [] if trace else None
    family = families(plan)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        await stream_one(session, url, {"model": "tiny", "prompt": [7] * 40, "max_tokens": 2}, Result())
        bodies = [request_body(plan[u][i], max_tokens, pins, sessions, trace_tag(family, u, i, plan[u][i]))
                  for u, i in order]
        ttfts = await run_open_loop(session, url, bodies, rate, seed, result)
    if follow_ttft is not None:
        follow_ttft += [t for key, t in zip(order, ttfts) if key in later and t is not None]
    return result


def long_context(model: Path, tokens: int = 32768) -> Path:
    """The weightless tiny model with a context that fits 8k-token documents (mockers only)."""
    for name, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
        path = model / name
        data = json.loads(path.read_text())
        data[key] = tokens
        path.write_text(json.dumps(data))
    return model


def _served(proc) -> str:
    try:
        text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    except OSError:
        return "?"
    return str(int(metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0))


def stack_env(stack: str) -> tuple[dict[str, str], str | None]:
    """(environment, interpreter) for a stack's processes: ours, or NVIDIA Dynamo kept on loopback."""
    env: dict[str, str] = {"DYN_LOG": "warn"}
    if stack != "anchor":
        return env, None
    env.update(PYTHONPATH="",  # its own `dynamo` package, not this checkout's
               DYN_TCP_RPC_HOST="127.0.0.1", DYN_EVENT_PLANE_HOST="127.0.0.1",
               DYN_TCP_RESPONSE_STREAM_HOST="127.0.0.1", DYN_SYSTEM_HOST="127.0.0.1", DYN_REQUEST_PLANE="tcp")
    return env, anchor_python()


def anchor_python() -> str:
    for venv in (os.environ.get("DYN_ANCHOR_VENV"), ROOT / ".venv-anchor", Path("/work/main/.venv-anchor")):
        if venv and (Path(venv) / "bin/python").exists():
            return str(Path(venv) / "bin/python")
    raise SystemExit("NVIDIA Dynamo is not installed: run scripts/install_anchor_dynamo.sh")


def _vllm_cluster(tmp: Path, args):
    from tests.vllm.conftest import BLOCK_SIZE, VllmCluster, require_vllm_venv

    python = require_vllm_venv()
    if getattr(args, "vllm_model", None) is None:  # built once per invocation
        args.vllm_model = tmp / "tiny-llama"
        subprocess.run([str(python), "-m", "dynamo.llm.tiny_model", "--out", str(args.vllm_model), "--weights",
                        "--preset", args.vllm_preset],
                       cwd=ROOT, check=True, capture_output=True, timeout=300)
    cluster = VllmCluster(tmp, args.vllm_model, python)
    cores = os.cpu_count() or 1  # vLLM pins each engine's OpenMP threads: one core each, not both on core 0
    workers = [cluster.vllm_worker("--enable-prefix-caching", env={"VLLM_CPU_OMP_THREADS_BIND": str(i % cores)},
                                   wait=False) for i in range(args.workers)]
    from tests.vllm.conftest import wait_healthy
    for worker in workers:
        wait_healthy(worker, timeout=600)
    args.block_size = BLOCK_SIZE
    return cluster, workers


def run_once(stack: str, spec: str, model: Path, plan, args, rate: float | None = None) -> dict:
    """`spec` is a router mode, optionally with extra frontend flags: "kv:--kv-overlap-score-weight 2";
    `pinned` is the reference router of `pinning`."""
    mode, _, extra = spec.partition(":")
    pinned, mode = mode == "pinned", ("kv" if mode == "pinned" else mode)
    tmp = Path(tempfile.mkdtemp(prefix=f"routing-{mode}-"))
    env, python = stack_env(stack)
    if args.engine == "vllm":  # engines start once (minutes); each run gets a fresh frontend and new prompts
        if getattr(args, "vllm", None) is None:
            args.vllm = _vllm_cluster(tmp, args)
        cluster, workers = args.vllm
        args.seed += 1
        plan = users(args)
        before = [_count(w) for w in workers]
    else:
        cluster = Cluster(tmp, model, "file", env, python=python)
    try:
        if args.engine == "mocker":
            workers = [cluster.mocker("--speedup-ratio", args.speedup, "--num-gpu-blocks-override",
                                      str(args.blocks), "--block-size", str(args.block_size),
                                      *args.mocker_args.split()) for _ in range(args.workers)]
        frontend = cluster.frontend("--router-mode", mode, *extra.split())
        if stack == "anchor":  # its /health does not name models: wait for the listing, then both workers warm
            wait_until(lambda: cluster.models() == ["tiny"], 120, "model listed")
            wait_until(lambda: len(_worker_ids(cluster.base_url)) >= args.workers, 120, "every worker listed")
            time.sleep(3)
        else:
            cluster.wait_workers("tiny", args.workers, timeout=120)
        procs = [frontend, *workers]
        pins = None
        if pinned:
            pins = pinning(plan, _worker_ids(cluster.base_url))
        cpu = [cpu_seconds(p.pid) for p in procs]
        later: list[float] = []
        url, subset = cluster.base_url + "/v1/completions", tracked(args.workload, plan)
        if rate:
            res = asyncio.run(run_rate(url, plan, args.max_tokens, rate, args.seed, pins, subset, later,
                                       args.sessions, bool(args.trace)))
        else:
            res = asyncio.run(run_users(url, plan, args.max_tokens, args.think_ms, args.seed, pins, subset,
                                        later, args.sessions, bool(args.trace)))
        if args.trace:
            write_trace(Path(args.trace), f"{stack}-{spec}" + (f"-{rate:g}rps" if rate else ""), res.trace)
        cpu = [(cpu_seconds(p.pid) - c) * 1e3 / max(res.requests, 1) for p, c in zip(procs, cpu)]
        frontend_ttft, stages = _frontend_means(cluster.base_url)
        served = [_count(w) for w in workers]
        if args.engine == "vllm":
            served = [a - b for a, b in zip(served, before)]
        return {"ttft50": pct(res.ttft, 0.5) * 1e3, "ttft99": pct(res.ttft, 0.99) * 1e3,
                "follow": (pct(later, 0.5) * 1e3, pct(later, 0.99) * 1e3) if later else None,
                "cached": res.cached_tokens / max(res.prompt_tokens, 1), "rps": res.requests / res.elapsed,
                "served": "/".join(map(str, served)), "errors": res.errors, "cpu": cpu,
                "late": _late(workers) if stack == "ours" and args.engine == "mocker" else None,
                "ttft_mean": statistics.fmean(res.ttft) * 1e3 if res.ttft else float("nan"),
                "engine_ttft": _engine_ttft(workers) if stack == "ours" and args.engine == "mocker" else None,
                "frontend_ttft": frontend_ttft, "stages": stages}
    finally:
        if args.engine == "vllm":
            frontend.stop()
            cluster.procs.remove(frontend)
        else:
            cluster.stop()


def write_trace(folder: Path, label: str, rows: list[tuple]) -> Path:
    """One run's requests as CSV, in the order they were sent: seconds since the first send, tag
    (user#index/family), worker id, prompt and cached tokens, TTFT ms (empty: no token)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    path = folder / f"{name}-{len(list(folder.glob(name + '-*.csv'))) + 1}.csv"
    rows = sorted(rows, key=lambda row: row[0])
    t0 = rows[0][0] if rows else 0.0
    lines = ["sent_s,tag,worker,prompt_tokens,cached_tokens,ttft_ms"]
    lines += [f"{sent - t0:.3f},{tag or ''},{'' if worker is None else worker},{prompt or ''},{cached},"
              f"{'' if ttft is None else f'{ttft * 1e3:.1f}'}" for sent, tag, worker, prompt, cached, ttft in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _worker_sums(workers, *names: str) -> list[float] | None:
    sums = [0.0] * len(names)
    for proc in workers:
        try:
            text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
        except OSError:
            return None
        for i, name in enumerate(names):
            sums[i] += metric_value(text, name, {}) or 0.0
    return sums


def _late(workers) -> float | None:
    """How far our mockers' steps ran behind their timing model: wall time busy / simulated - 1."""
    sums = _worker_sums(workers, "dynamo_mocker_busy_seconds", "dynamo_mocker_simulated_seconds")
    return sums[0] / sums[1] - 1 if sums and sums[1] else None


def _engine_ttft(workers) -> float | None:
    """Mean TTFT inside our mockers (arrival -> first token sampled), ms: the rest of the client's
    TTFT is the frontend and the request/response planes."""
    sums = _worker_sums(workers, "dynamo_mocker_time_to_first_token_seconds_sum",
                        "dynamo_mocker_time_to_first_token_seconds_count")
    return sums[0] / sums[1] * 1e3 if sums and sums[1] else None


def _frontend_means(base_url: str) -> tuple[float | None, tuple[float | None, ...]]:
    """From one scrape of the frontend's /metrics (both stacks export these), mean ms of: the TTFT it
    measured itself, and its pipeline stages (Dynamo's `stage_duration_seconds`): preprocess, route,
    transport_roundtrip (sent to a worker -> its first answer)."""
    try:
        text = http_get(base_url + "/metrics")[1].decode()
    except OSError:
        return None, (None, None, None)

    def mean_ms(name: str, labels: dict[str, str]) -> float | None:
        total, count = metric_value(text, name + "_sum", labels), metric_value(text, name + "_count", labels)
        return total / count * 1e3 if total is not None and count else None

    stages = tuple(mean_ms("dynamo_frontend_stage_duration_seconds", {"stage": stage})
                   for stage in ("preprocess", "route", "transport_roundtrip"))
    return mean_ms("dynamo_frontend_time_to_first_token_seconds", {}), stages


def _ours_only(spec: str) -> bool:
    return any(flag in spec for flag in OURS_ONLY_FLAGS)


def _worker_ids(base_url: str) -> list[int]:
    """The workers' instance ids from the frontend's /health: ours names them per model, Dynamo's
    lists every instance of every endpoint."""
    health = json.loads(http_get(base_url + "/health")[1])
    if "router" in health:
        return sorted(health["router"]["models"]["tiny"]["workers"])
    return sorted({i["instance_id"] for i in health["instances"] if i["endpoint"] == "generate"})


def _count(proc) -> int:
    served = _served(proc)
    return int(served) if served.isdigit() else -1


def _spread(values: list[float], fmt: str) -> str:
    mid = statistics.median(values)
    if len(values) == 1:
        return fmt.format(mid)
    return f"{fmt.format(mid)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="groups")
    parser.add_argument("--modes", nargs="+", default=["kv", "round-robin", "random"],
                        help='router modes, each optionally with frontend flags: "kv:--kv-overlap-score-weight 2"')
    parser.add_argument("--stacks", nargs="+", choices=["ours", "anchor"], default=["ours"])
    parser.add_argument("--anchor", action="store_true", help="same as --stacks anchor")
    parser.add_argument("--rounds", type=int, default=1)
    for name in ("requests", "concurrency", "groups", "prefix_tokens", "suffix_tokens", "blocks"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="each user pauses uniform(0, this) ms before each request (0: closed loop, users "
                        "that start together stay in step and reach the workers in bursts)")
    parser.add_argument("--rates", type=float, nargs="+", default=None, metavar="R",
                        help="open loop: Poisson arrivals at each of these rates (requests/s) instead of users")
    parser.add_argument("--sessions", action="store_true",
                        help="every request sends x-dynamo-session-id naming its prompt family (a conversation, a "
                        "shared prefix): passive unless a mode turns affinity on, e.g. "
                        '"round-robin:--router-session-affinity-ttl-secs 300"')
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2,
                        help="engine workers (2 by default: with 2, round-robin sends a conversation's next turn to "
                        "its cache half the time by chance; production pools are larger)")
    parser.add_argument("--mocker-args", default="",
                        help='more flags for every mocker, both stacks: "--num-host-blocks 4000" (a host KV tier)')
    parser.add_argument("--speedup", default="1")
    parser.add_argument("--trace", metavar="DIR", default=None,
                        help="write each run's requests to DIR/<stack>-<mode>-<n>.csv (send time, user#turn/family, "
                        "worker, cached tokens, TTFT): where a percentile comes from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", choices=["mocker", "vllm"], default="mocker")
    parser.add_argument("--vllm-preset", choices=["tiny", "small"], default="tiny",
                        help="the random-weight Llama vLLM serves: 'small' (8 layers, hidden 512) makes a 1,500-token "
                        "prefill cost about as much on a CPU core as a long prompt does on a GPU, next to the stack's "
                        "fixed costs")
    args = parser.parse_args()
    for key, value in WORKLOADS[args.workload].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rates and args.workload in ("multi-turn", "agentic"):
        parser.error("--rates: a conversation's next turn waits for the last answer; use users (--think-ms)")
    stacks = ["anchor"] if args.anchor else args.stacks
    model = long_context(build_tiny_model(Path(tempfile.mkdtemp(prefix="routing-model-")) / "tiny", weights=False))
    plan = users(args)
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for r in range(args.rounds):
            order = [(s, m, rate) for rate in (args.rates or [None]) for s in stacks for m in args.modes
                     if not (s == "anchor" and _ours_only(m))]
            for stack, spec, rate in (order if r % 2 == 0 else order[::-1]):
                label = spec if rate is None else f"{spec} @ {rate:g}/s"
                runs.setdefault((stack, label), []).append(run_once(stack, spec, model, plan, args, rate))
    finally:
        if getattr(args, "vllm", None) is not None:
            args.vllm[0].stop()
    rows, follow = _rows(runs)
    n = sum(len(p) for p in plan)
    print_table(f"routing quality, workload {args.workload}: {n} streaming completions x {args.rounds} round(s), "
                f"{args.groups} groups x {args.prefix_tokens}-token prefixes + {args.suffix_tokens}-token suffixes, "
                f"{args.max_tokens} output tokens, "
                + ("open loop (Poisson arrivals at the rate in each row)" if args.rates else
                   f"{args.concurrency} users" + (f" (think time U(0, {args.think_ms:.0f}) ms)" if args.think_ms else ""))
                + ", "
                + (f"{args.workers} vLLM CPU workers ({args.vllm_preset} model, block size {args.block_size})"
                   if args.engine == "vllm" else
                   f"{args.workers} mockers x {args.blocks} blocks of {args.block_size} (speedup {args.speedup})")
                + "; median [min-max] over rounds",
                ("router", "TTFT p50 ms", "TTFT p99 ms")
                + ((f"{TRACKED[args.workload][0]} TTFT p50 / p99 ms",) if follow else ())
                + ("cached fraction", "req/s", "requests per worker", "errors", "CPU ms/request frontend/workers",
                   "mocker steps late", "TTFT mean ms client/frontend/engine",
                   "frontend stages mean ms preprocess/route/transport"), rows)


def _rows(runs: dict[tuple[str, str], list[dict]]) -> tuple[list[tuple], bool]:
    """One table row per (stack, mode); the tracked requests' column only where the plan has them."""
    follow = any(x["follow"] for results in runs.values() for x in results)
    rows = []
    for (stack, spec), results in runs.items():
        later = (_spread([x["follow"][0] for x in results], "{:.0f}") + " / "
                 + _spread([x["follow"][1] for x in results], "{:.0f}"),) if follow else ()
        rows.append((f"{'Dynamo 1.6.1' if stack == 'anchor' else 'ours'} {spec}",
                     _spread([x["ttft50"] for x in results], "{:.0f}"), _spread([x["ttft99"] for x in results], "{:.0f}"),
                     *later,
                     _spread([x["cached"] for x in results], "{:.2f}"), _spread([x["rps"] for x in results], "{:.1f}"),
                     " ".join(x["served"] for x in results), sum(x["errors"] for x in results),
                     " ".join("/".join(f"{v:.1f}" for v in x["cpu"]) for x in results),
                     " ".join("-" if x["late"] is None else f"{x['late']:+.1%}" for x in results),
                     " ".join("/".join("-" if v is None else f"{v:.0f}" for v in
                                       (x["ttft_mean"], x["frontend_ttft"], x["engine_ttft"])) for x in results),
                     " ".join("/".join("-" if v is None else f"{v:.1f}" for v in x["stages"]) for x in results)))
    return rows, follow


if __name__ == "__main__":
    main()

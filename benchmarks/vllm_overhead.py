"""Overhead of frontend + `python -m dynamo.vllm` over vLLM's own OpenAI server, same
model, same engine settings, same machine, same requests.

    .venv/bin/python benchmarks/vllm_overhead.py [--model DIR] [--concurrency 1 16]

Both stacks serve streaming `/v1/completions` with token-id prompts (distinct per
request, so no prefix-cache hits), `ignore_eos`, a fixed `max_tokens`. Reported per
concurrency: mean/p50/p90 TTFT (first streamed token) and output tokens/s (sum of
completion tokens / wall time). The stacks run one after the other, never together.
Needs the vLLM venv (scripts/install_vllm_cpu.sh); builds the tiny model if no --model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynamo.runtime.net import free_port

REPO = Path(__file__).resolve().parents[1]
ENGINE_ENV = {"DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
              "PYTHONUNBUFFERED": "1"}
ENGINE_ARGS = ["--served-model-name", "tiny", "--enforce-eager", "--dtype", "float32", "--block-size", "32",
               "--max-model-len", "1024", "--distributed-executor-backend", "uni", "--seed", "0"]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:  # the process group: vLLM's engine-core/worker children included
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a server exited while starting ({url})")
        try:
            resp = httpx.post(url, json={"model": "tiny", "prompt": [10, 11, 12], "max_tokens": 1}, timeout=5)
            if resp.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


async def one_request(http: httpx.AsyncClient, url: str, prompt: list[int], max_tokens: int) -> tuple[float, int]:
    """(TTFT seconds, completion tokens) of one streamed completion."""
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, tokens = None, 0
    async with http.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return (ttft if ttft is not None else float("nan")), tokens


async def load(url: str, prompts: list[list[int]], concurrency: int, max_tokens: int) -> dict:
    queue = list(prompts)
    ttfts: list[float] = []
    total = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal total
        while queue:
            ttft, tokens = await one_request(http, url, queue.pop(), max_tokens)
            ttfts.append(ttft)
            total += tokens

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts.sort()
    return {"ttft_mean_ms": 1000 * statistics.fmean(ttfts), "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2],
            "ttft_p90_ms": 1000 * ttfts[int(len(ttfts) * 0.9) - 1], "tok_s": total / wall, "requests": len(ttfts)}


def median_round(rounds: list[dict]) -> dict:
    """The round with the median throughput (keeps each round's figures together)."""
    return sorted(rounds, key=lambda r: r["tok_s"])[(len(rounds) - 1) // 2]


def prompts_for(seed: int, count: int, length: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(6, 4000) for _ in range(length)] for _ in range(count)]


def run_stack(name: str, procs: list[subprocess.Popen], url: str, args: argparse.Namespace) -> dict:
    try:
        wait_ready(url, procs)
        results = {}
        for level, conc in enumerate(args.concurrency):
            asyncio.run(load(url, prompts_for(99, conc * 2, args.prompt_len), conc, args.max_tokens))  # warm up
            count = max(args.requests_per_stream * conc, args.min_requests)
            prompts = prompts_for(1000 + level, count, args.prompt_len)
            results[conc] = asyncio.run(load(url, prompts, conc, args.max_tokens))
            print(f"  {name} c={conc}: {results[conc]}", file=sys.stderr)
        return results
    finally:
        stop(procs)


def bare_vllm(args, tmp: Path, route: str = "/v1/completions", engine_args: Sequence[str] = ENGINE_ARGS,
              server_args: Sequence[str] = ()) -> tuple[list[subprocess.Popen], str]:
    """vLLM's own OpenAI server (`server_args`: its flags beside the engine's) and the URL of `route`."""
    port = free_port()
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model), "--host",
           "127.0.0.1", "--port", str(port), *server_args, *engine_args]
    return [start(cmd, ENGINE_ENV, tmp / "vllm_server.log")], f"http://127.0.0.1:{port}{route}"


def dynamo_stack(args, tmp: Path, route: str = "/v1/completions", engine_args: Sequence[str] = ENGINE_ARGS,
                 worker_args: Sequence[str] = ()) -> tuple[list[subprocess.Popen], str]:
    """Frontend + one `dynamo.vllm` worker (`worker_args`: its own flags) and the URL of `route`."""
    port = free_port()
    env = {**ENGINE_ENV, "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp / "kv"), "DYN_LOG": "warn"}
    worker = start([args.vllm_python, "-m", "dynamo.vllm", "--model", str(args.model), *worker_args, *engine_args],
                   env, tmp / "dynamo_vllm.log")
    frontend = start([sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port)],
                     env, tmp / "frontend.log")
    return [worker, frontend], f"http://127.0.0.1:{port}{route}"


def side_by_side(args, builder: str, bare: Callable, ours: Callable, run: Callable) -> tuple[list[dict], list[dict]]:
    """Each round's results of vLLM's own server (`bare(args, tmp)`: its processes and URL) and ours
    (`ours`), one after the other, `--rounds` times, measured by `run(name, procs, url, args)`; the model
    is `--model`, else built by `dynamo.llm.<builder>` into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="vllm-side-by-side-") as tmp_name:
        tmp = Path(tmp_name)
        if args.model is None:
            args.model = tmp / builder
            subprocess.run([args.vllm_python, "-m", f"dynamo.llm.{builder}", "--out", str(args.model), "--weights"],
                           cwd=REPO, check=True, capture_output=True)
        bare_rounds, our_rounds = [], []
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}: vLLM's own OpenAI server ...", file=sys.stderr)
            bare_rounds.append(run("vllm", *bare(args, tmp), args))
            print(f"round {round_no + 1}: frontend + dynamo.vllm ...", file=sys.stderr)
            our_rounds.append(run("dynamo", *ours(args, tmp), args))
    return bare_rounds, our_rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: build the tiny Llama)")
    ap.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--requests-per-stream", type=int, default=6, help="requests per concurrent stream")
    ap.add_argument("--min-requests", type=int, default=24, help="at least this many requests per level")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate bare/ours this many times; the table shows each level's median round")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    bare_rounds, our_rounds = side_by_side(args, "tiny_model", bare_vllm, dynamo_stack, run_stack)
    bare = {c: median_round([r[c] for r in bare_rounds]) for c in args.concurrency}
    ours = {c: median_round([r[c] for r in our_rounds]) for c in args.concurrency}
    print(f"\n{'conc':>4} {'stack':<22} {'TTFT mean':>10} {'p50':>8} {'p90':>8} {'out tok/s':>10}")
    for conc in args.concurrency:
        for name, r in (("vllm api_server", bare[conc]), ("frontend+dynamo.vllm", ours[conc])):
            print(f"{conc:>4} {name:<22} {r['ttft_mean_ms']:>8.1f}ms {r['ttft_p50_ms']:>6.1f}ms "
                  f"{r['ttft_p90_ms']:>6.1f}ms {r['tok_s']:>10.1f}")
        b, o = bare[conc], ours[conc]
        print(f"{conc:>4} {'delta (ours vs bare)':<22} {100 * (o['ttft_mean_ms'] / b['ttft_mean_ms'] - 1):>+9.1f}% "
              f"{100 * (o['ttft_p50_ms'] / b['ttft_p50_ms'] - 1):>+7.1f}% {'':>8} "
              f"{100 * (o['tok_s'] / b['tok_s'] - 1):>+9.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bursts of chats arriving at once, ours and NVIDIA Dynamo 1.6.1 side by side: what a frontend adds
to time to first token when many requests land together (agents starting on one system prompt).

Each burst is `--burst` streaming chats sent together, sharing one `--system-words` system prompt
and each with its own short message, then a pause. `cold`: every burst has a new system prompt
(tokenized, prefilled for the first time); `warm`: every burst repeats one (cached in the frontend's
tokenizer cache and the engines' KV caches). 2 real-time mockers, kv routing, one stack at a time.
The first `--skip` bursts of each run (process start-up: the first requests of a fresh deployment)
are reported apart. The table gives TTFT by rank within a burst (the median over bursts of the
fastest, the median and the slowest request).

    .venv/bin/python -m benchmarks.burst_intake --stacks ours anchor --kinds cold warm
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.agent_turns import words
from benchmarks.loadgen import Result, print_table, stream_one
from benchmarks.routing_quality import long_context, stack_env
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, wait_until


async def bursts(url: str, args, warm: bool) -> list[list[float]]:
    """Each burst's TTFTs, sorted."""
    rng = random.Random(args.seed)
    fixed = "You are an agent. " + words(random.Random(args.seed + 1), args.system_words)
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(args.skip + args.bursts):
            system = fixed if warm else "You are an agent. " + words(rng, args.system_words)
            bodies = [{"model": "tiny", "max_tokens": args.max_tokens, "ignore_eos": True,
                       "messages": [{"role": "system", "content": system},
                                    {"role": "user", "content": f"u{i} " + words(rng, 40)}]}
                      for i in range(args.burst)]
            result = Result()
            ttfts = await asyncio.gather(*(stream_one(session, url, b, result) for b in bodies))
            out.append(sorted(t for t in ttfts if t is not None))
            await asyncio.sleep(args.pause_ms / 1e3)
    return out


def run_once(stack: str, kind: str, model: Path, args) -> list[list[float]]:
    env, python = stack_env(stack)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="burst-")), model, "file", env, python=python)
    try:
        for _ in range(2):
            cluster.mocker("--speedup-ratio", "1", "--num-gpu-blocks-override", "8192", "--block-size", "16")
        cluster.frontend("--router-mode", "kv")
        if stack == "anchor":  # its /health does not name models: wait for the listing, then both workers warm
            wait_until(lambda: cluster.models() == ["tiny"], 120, "model listed")
            time.sleep(3)
        else:
            cluster.wait_workers("tiny", 2, timeout=120)
        return asyncio.run(bursts(cluster.base_url + "/v1/chat/completions", args, kind == "warm"))
    finally:
        cluster.stop()


def by_rank(runs: list[list[float]]) -> str:
    """fastest / median / slowest request of a burst, each the median over bursts, in ms."""
    full = [r for r in runs if r]
    ranks = [0, len(full[0]) // 2, len(full[0]) - 1]
    return " / ".join(f"{statistics.median(r[k] for r in full) * 1e3:.0f}" for k in ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", nargs="+", choices=["ours", "anchor"], default=["ours"])
    parser.add_argument("--kinds", nargs="+", choices=["cold", "warm"], default=["cold", "warm"])
    parser.add_argument("--burst", type=int, default=12, help="chats sent together")
    parser.add_argument("--bursts", type=int, default=10, help="measured bursts per run")
    parser.add_argument("--skip", type=int, default=2, help="first bursts of a run, reported apart (start-up)")
    parser.add_argument("--system-words", type=int, default=1500)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--pause-ms", type=float, default=500.0)
    parser.add_argument("--rounds", type=int, default=1, help="runs per row, in alternating order")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = long_context(build_tiny_model(Path(tempfile.mkdtemp(prefix="burst-model-")) / "tiny", weights=False))
    order = [(s, k) for k in args.kinds for s in args.stacks]
    runs: dict[tuple[str, str], list[list[list[float]]]] = {}
    for r in range(args.rounds):
        for key in (order if r % 2 == 0 else order[::-1]):
            runs.setdefault(key, []).append(run_once(*key, model, args))
    rows = []
    for (stack, kind), results in runs.items():
        first = [b for res in results for b in res[:args.skip]]
        later = [b for res in results for b in res[args.skip:]]
        rows.append((f"{'Dynamo 1.6.1' if stack == 'anchor' else 'ours'} {kind}", by_rank(later),
                     by_rank(first) if first else "-", len(later)))
    print_table(f"bursts of {args.burst} streaming chats, {args.system_words}-word system prompt (cold: new each "
                f"burst; warm: repeated), {args.max_tokens}-token answers, 2 real-time mockers, kv routing",
                ("stack, prompt", "TTFT fastest / median / slowest ms", f"first {args.skip} bursts (start-up)",
                 "bursts"), rows)


if __name__ == "__main__":
    main()

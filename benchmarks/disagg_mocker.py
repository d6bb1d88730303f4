"""Aggregated vs disaggregated serving with mocker workers at realistic speed.

Equal worker counts: `agg` runs N aggregated mockers; `disagg` runs N/2 prefill + N/2
decode mockers behind the same frontend. Long prompts (ISL 3000 unique token ids, so no
prefix reuse) and OSL 150, streamed; prints TTFT and ITL p50/p99 and output tokens/s per
worker. (NVIDIA Dynamo reports +30% throughput per GPU for ISL 3K / OSL 150 on one node.)

    .venv/bin/python benchmarks/disagg_mocker.py [--workers 2] [--requests 64] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import pct, print_table, run_load
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster


def body_factory(isl: int, osl: int, vocab: int, seed: int):
    def make(index: int) -> dict:
        rng = random.Random(seed * 100003 + index)
        return {"model": "tiny", "prompt": [rng.randrange(10, vocab) for _ in range(isl)], "max_tokens": osl}

    return make


def run_config(name: str, roles: list[str], model: Path, args) -> tuple:
    tmp = Path(tempfile.mkdtemp(prefix=f"dynamo-disagg-{name}-"))
    cluster = Cluster(tmp, model, "file", {"DYN_LOG": "warn"})
    common = ["--speedup-ratio", args.speedup, "--context-length", "8192", "--max-num-batched-tokens", "8192"]
    try:
        for role in roles:
            extra = [] if role == "agg" else ["--disaggregation-mode", role]
            cluster.mocker(*common, *extra, system_port=False)
        cluster.frontend()
        cluster.wait_workers("tiny", len(roles))
        res = asyncio.run(run_load(cluster.base_url + "/v1/completions", body_factory(args.isl, args.osl, 4000, 7),
                                   args.requests, args.concurrency))
        return (name, len(roles), res.requests, pct(res.ttft, 0.5) * 1e3, pct(res.ttft, 0.99) * 1e3,
                pct(res.itl, 0.5) * 1e3, pct(res.itl, 0.99) * 1e3, res.tokens / res.elapsed,
                res.tokens / res.elapsed / len(roles), res.errors)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers per configuration (even)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--isl", type=int, default=3000)
    parser.add_argument("--osl", type=int, default=150)
    parser.add_argument("--speedup", default="1")
    args = parser.parse_args()
    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="dynamo-model-")) / "tiny", weights=False)
    half = args.workers // 2
    rows = [run_config("agg", ["agg"] * args.workers, model, args),
            run_config("disagg", ["prefill"] * half + ["decode"] * (args.workers - half), model, args)]
    print_table(f"mocker speedup {args.speedup}, ISL {args.isl}, OSL {args.osl}, concurrency {args.concurrency}, "
                f"{args.requests} requests",
                ("mode", "workers", "requests", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                 "out tok/s", "out tok/s per worker", "errors"), rows)


if __name__ == "__main__":
    main()

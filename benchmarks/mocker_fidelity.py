"""Mocker fidelity: does our mocker time closed-loop traffic as NVIDIA Dynamo 1.6.1's does?

One mocker behind each stack's frontend (round-robin: routing plays no part), N closed-loop users
running growing multi-turn conversations (`routing_quality.py`'s multi-turn plan), at a low speedup
so that engine time dominates every other cost. Equal TTFT percentiles and ITL across stacks mean the
two engine models agree; `routing_quality.py` then compares routers, not mockers. (This is how the
step timing of a prefill joining running decodes was found to differ: see dynamo/mocker/scheduler.py.)

    .venv/bin/python benchmarks/mocker_fidelity.py [--users 1 2 3 6] [--speedup 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import pct, print_table
from benchmarks.routing_quality import long_context, run_users, stack_env
from benchmarks.routing_workloads import users
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, wait_until


def run(stack: str, n_users: int, args) -> tuple:
    plan = users(argparse.Namespace(seed=0, workload="multi-turn", requests=args.groups * 6, groups=args.groups,
                                    prefix_tokens=800, suffix_tokens=120, max_tokens=32, concurrency=n_users))
    tmp = Path(tempfile.mkdtemp(prefix=f"fidelity-{stack}-"))
    env, python = stack_env(stack)
    cluster = Cluster(tmp, long_context(build_tiny_model(tmp / "tiny", weights=False)), "file", env, python=python)
    try:
        cluster.mocker("--speedup-ratio", args.speedup, "--num-gpu-blocks-override", "480", "--block-size", "64")
        cluster.frontend("--router-mode", "round-robin")
        wait_until(lambda: cluster.models() == ["tiny"], 120, f"{stack} serving")
        res = asyncio.run(run_users(cluster.base_url + "/v1/completions", plan, 32))
    finally:
        cluster.stop()
    t = [x * 1e3 for x in res.ttft]
    return (f"{n_users} / {'ours' if stack == 'ours' else 'Dynamo 1.6.1'}", pct(t, 0.1), pct(t, 0.5), pct(t, 0.9),
            statistics.fmean(t), statistics.fmean(res.itl) * 1e3, res.requests / res.elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 3, 6])
    parser.add_argument("--speedup", default="0.25")
    parser.add_argument("--groups", type=int, default=12, help="conversations (6 turns each)")
    args = parser.parse_args()
    rows = [run(stack, n, args) for n in args.users for stack in ("ours", "anchor")]
    print_table(f"one mocker, closed-loop multi-turn users, speedup {args.speedup} (ms)",
                ("users / stack", "TTFT p10", "TTFT p50", "TTFT p90", "TTFT mean", "ITL mean", "req/s"), rows)


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"\n({time.time() - start:.0f} s)")

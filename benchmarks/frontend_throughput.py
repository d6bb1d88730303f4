"""Frontend throughput and latency against a fast mocker (speedup 1000 by default).

Starts `python -m dynamo.frontend` + `python -m dynamo.mocker` as real processes on
embedded file discovery, then streams chat completions (~124-token prompts, 64 output
tokens, like the anchor measurement in shared/reference/anchor-dynamo.md) at each
concurrency level and prints a table: requests/s, output tokens/s, TTFT and ITL
p50/p99, frontend / mocker CPU time per request (from /proc), SSE events per request.

A fast mocker produces tokens faster than one SSE event each can be written; the
frontend then sends what has arrived together in one event (like vLLM's
stream interval), which the SSE-events column shows. Use `--speedup 5` to see the
one-token-per-event cost.

    .venv/bin/python benchmarks/frontend_throughput.py [--concurrency 1 16 64 256] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import cpu_seconds, pct, print_table, run_load
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, wait_until

PROMPT = ("You are a helpful assistant. Summarize the following notes about distributed inference serving, "
          "prefix caching, KV-aware routing and disaggregated prefill in a few sentences. ") * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--requests", type=int, default=400, help="requests per level (at least 4x concurrency)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--speedup", default="1000")
    parser.add_argument("--anchor", action="store_true",
                        help="run NVIDIA Dynamo 1.6.1 from .venv-anchor instead (scripts/install_anchor_dynamo.sh)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-bench-"))
    model = build_tiny_model(tmp / "tiny", weights=False)
    env = {"DYN_LOG": "warn"}
    python = None
    if args.anchor:
        python = str(Path(__file__).resolve().parents[1] / ".venv-anchor/bin/python")
        env.update(DYN_TCP_RPC_HOST="127.0.0.1", DYN_EVENT_PLANE_HOST="127.0.0.1",
                   DYN_TCP_RESPONSE_STREAM_HOST="127.0.0.1", DYN_SYSTEM_HOST="127.0.0.1", DYN_REQUEST_PLANE="tcp")
    cluster = Cluster(tmp, model, "file", env, python=python)
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": args.max_tokens}
    try:
        mocker = cluster.mocker("--speedup-ratio", args.speedup, system_port=False)
        frontend = cluster.frontend()
        wait_until(lambda: cluster.models() == ["tiny"], 120, "model listed")
        url = cluster.base_url + "/v1/chat/completions"
        rows = []
        for concurrency, fresh in [(1, True), (1, False)] + [(c, False) for c in args.concurrency if c > 1]:
            total = max(args.requests, 4 * concurrency) if concurrency > 1 else min(args.requests, 200)
            fe0, mo0 = cpu_seconds(frontend.pid), cpu_seconds(mocker.pid)
            res = asyncio.run(run_load(url, lambda i: body, total, concurrency, fresh, warmup=body))
            fe1, mo1 = cpu_seconds(frontend.pid), cpu_seconds(mocker.pid)
            n = max(res.requests, 1)
            rows.append((f"{concurrency} {'new conn' if fresh else 'keep-alive'}", n / res.elapsed,
                         res.tokens / res.elapsed, pct(res.ttft, 0.5) * 1e3, pct(res.ttft, 0.99) * 1e3,
                         pct(res.itl, 0.5) * 1e3, pct(res.itl, 0.99) * 1e3, (fe1 - fe0) / n * 1e3,
                         (mo1 - mo0) / n * 1e3, res.events / n, res.errors))
        who = "NVIDIA Dynamo 1.6.1" if args.anchor else "ours"
        print_table(f"{who}: frontend + mocker (speedup {args.speedup}), streaming chat, ~124-token prompt, "
                    f"{args.max_tokens} output tokens, Python aiohttp client on the same machine",
                    ("concurrency", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                     "frontend CPU ms/req", "mocker CPU ms/req", "SSE events/req", "errors"), rows)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

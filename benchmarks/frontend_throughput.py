"""Frontend throughput and latency against a fast mocker (speedup 1000).

Starts `python -m dynamo.frontend` + `python -m dynamo.mocker` as real processes on
embedded file discovery, then streams chat completions (~124-token prompts, 64 output
tokens, like the anchor measurement in shared/reference/anchor-dynamo.md) at each
concurrency level and prints a table: requests/s, output tokens/s, TTFT and ITL
p50/p99, and frontend / mocker CPU time per request (from /proc).

    .venv/bin/python benchmarks/frontend_throughput.py [--concurrency 1 16 64 256] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dynamo.llm.tiny_model import build_tiny_model  # noqa: E402
from tests.fixtures.procs import Cluster  # noqa: E402

PROMPT = ("You are a helpful assistant. Summarize the following notes about distributed inference serving, "
          "prefix caching, KV-aware routing and disaggregated prefill in a few sentences. ") * 3


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_request(session: aiohttp.ClientSession, url: str, max_tokens: int) -> tuple[float, list[float], int, int]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft = None
    arrivals: list[float] = []
    tokens = 0
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - start
                arrivals.append(now)
    itls = []
    if tokens > 1 and len(arrivals) > 1:
        itls = [(arrivals[-1] - arrivals[0]) / (tokens - 1)]
    return ttft or float("nan"), itls, tokens, len(arrivals)


async def run_level(url: str, concurrency: int, total: int, max_tokens: int, fresh: bool) -> dict:
    ttfts: list[float] = []
    itls: list[float] = []
    tokens = 0
    events = 0
    queue = list(range(total))
    connector = aiohttp.TCPConnector(limit=0, force_close=fresh)
    async with aiohttp.ClientSession(connector=connector) as session:
        await one_request(session, url, 4)  # warm the connection / model

        async def worker():
            nonlocal tokens, events
            while queue:
                queue.pop()
                ttft, itl, count, chunks = await one_request(session, url, max_tokens)
                ttfts.append(ttft)
                itls.extend(itl)
                tokens += count
                events += chunks

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "requests": total, "tokens": tokens, "ttft": ttfts, "itl": itls,
            "events": events / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--requests", type=int, default=400, help="requests per level (at least 4x concurrency)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--speedup", default="1000")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-bench-"))
    model = build_tiny_model(tmp / "tiny", weights=False)
    cluster = Cluster(tmp, model, "file", {"DYN_LOG": "warn"})
    try:
        mocker = cluster.mocker("--speedup-ratio", args.speedup, system_port=False)
        frontend = cluster.frontend()
        cluster.wait_workers("tiny", 1)
        url = cluster.base_url + "/v1/chat/completions"
        rows = []
        levels = [(1, True)] + [(c, False) for c in args.concurrency]
        for concurrency, fresh in levels:
            total = max(args.requests, 4 * concurrency)
            if concurrency == 1:
                total = min(total, 200)
            fe0, mo0 = cpu_seconds(frontend.pid), cpu_seconds(mocker.pid)
            res = asyncio.run(run_level(url, concurrency, total, args.max_tokens, fresh))
            fe1, mo1 = cpu_seconds(frontend.pid), cpu_seconds(mocker.pid)
            rows.append((f"{concurrency}{' new-conn' if fresh else ' keep-alive'}", res["requests"] / res["elapsed"],
                         res["tokens"] / res["elapsed"], pct(res["ttft"], 0.5) * 1e3, pct(res["ttft"], 0.99) * 1e3,
                         pct(res["itl"], 0.5) * 1e3, pct(res["itl"], 0.99) * 1e3,
                         (fe1 - fe0) / res["requests"] * 1e3, (mo1 - mo0) / res["requests"] * 1e3,
                         res["events"]))
        print(f"\nfrontend + mocker (speedup {args.speedup}), streaming chat, ~124-token prompt, "
              f"{args.max_tokens} output tokens, Python aiohttp client on the same 2 cores\n")
        head = ("concurrency", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                "frontend CPU ms/req", "mocker CPU ms/req", "SSE events/req")
        print(" | ".join(head))
        print(" | ".join("---" for _ in head))
        for row in rows:
            print(" | ".join([row[0]] + [f"{v:.1f}" if v >= 10 else f"{v:.2f}" for v in row[1:]]))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()

"""The Batch API next to interactive traffic: what a running batch costs the interactive users, and
how fast a batch gets through against the same requests sent by a client.

Starts `python -m dynamo.frontend --batch-concurrency K` and two real-time mockers (real processes,
file discovery). Interactive load: `--users` streaming chat users, each sending requests back to back
(~120-token prompts, `--max-tokens` output tokens). Three phases, one after the other, each with the
same interactive load: alone; beside a batch of `--batch-requests` chat requests (uploaded as a JSONL
file, run by the frontend at K at a time, polled until done); beside the same requests sent by a client
at K at a time (what a user without a Batch API runs). Prints the interactive TTFT p50/p99 per phase
and the bulk requests' throughput and wall time.

    .venv/bin/python benchmarks/batch_api.py [--users 4] [--batch-requests 200] [--batch-concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.loadgen import pct, print_table
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster

PROMPT = "Summarize the notes on prefix caching, KV-aware routing and disaggregated prefill. " * 6


def chat(i: int, max_tokens: int) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": f"{i}: {PROMPT}"}], "max_tokens": max_tokens}


def sent(i: int, max_tokens: int) -> dict:
    """`chat` as the openai client sends it (ignore_eos, an extension, in extra_body)."""
    return {**chat(i, max_tokens), "extra_body": {"ignore_eos": True}}


async def interactive(client: openai.AsyncOpenAI, users: int, max_tokens: int, stop: asyncio.Event) -> list[float]:
    ttfts: list[float] = []

    async def user(u: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            stream = await client.chat.completions.create(**sent(u * 100000 + n, max_tokens), stream=True)
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            if first is not None:
                ttfts.append(first)
            n += 1

    await asyncio.gather(*(user(u) for u in range(users)))
    return ttfts


async def bulk_batch(client: openai.AsyncOpenAI, n: int, max_tokens: int) -> float:
    lines = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions", "body": {**chat(-i - 1, max_tokens), "ignore_eos": True}}
             for i in range(n)]
    source = await client.files.create(file=("bulk.jsonl", io.BytesIO("\n".join(map(json.dumps, lines)).encode())),
                                       purpose="batch")
    started = time.perf_counter()
    batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.25)
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == n, batch
    return time.perf_counter() - started


async def bulk_client(client: openai.AsyncOpenAI, n: int, max_tokens: int, concurrency: int) -> float:
    todo = iter(range(n))
    started = time.perf_counter()

    async def worker() -> None:
        for i in todo:
            await client.chat.completions.create(**sent(-i - 1, max_tokens))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def phase(base_url: str, kind: str, args) -> tuple:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    stop = asyncio.Event()
    users = asyncio.ensure_future(interactive(client, args.users, args.max_tokens, stop))
    if kind == "alone":
        await asyncio.sleep(args.alone_secs)
        wall = None
    elif kind == "batch":
        wall = await bulk_batch(client, args.batch_requests, args.max_tokens)
    else:
        wall = await bulk_client(client, args.batch_requests, args.max_tokens, args.batch_concurrency)
    stop.set()
    ttfts = await users
    await client.close()
    rate = "-" if wall is None else f"{args.batch_requests / wall:.1f}"
    return (kind, len(ttfts), pct(ttfts, 0.5) * 1e3, pct(ttfts, 0.99) * 1e3, rate, "-" if wall is None else
            f"{wall:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--batch-requests", type=int, default=200)
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--alone-secs", type=float, default=15.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    cluster = Cluster(tmp, build_tiny_model(tmp / "tiny", weights=False))
    try:
        for _ in range(2):
            cluster.mocker("--speedup-ratio", "1")
        cluster.frontend("--batch-concurrency", str(args.batch_concurrency))
        cluster.wait_workers("tiny", 2)
        rows = [asyncio.run(phase(cluster.base_url, kind, args)) for kind in ("alone", "batch", "client")]
    finally:
        cluster.stop()
    print_table(f"Batch API beside {args.users} interactive streaming users ({args.max_tokens} output tokens, 2 "
                f"real-time mockers); bulk: {args.batch_requests} chat requests at {args.batch_concurrency} at a time",
                ("bulk requests", "interactive requests", "interactive TTFT p50 ms", "interactive TTFT p99 ms",
                 "bulk req/s", "bulk wall s"), rows)


if __name__ == "__main__":
    main()

"""Shared load generator for the benchmarks: streaming OpenAI requests over aiohttp,
measuring TTFT, inter-token latency and tokens from the real SSE stream."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Callable

import aiohttp

from dynamo.profiler.client import sse_chunk


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Result:
    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.itl: list[float] = []
        self.tokens = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.events = 0
        self.requests = 0
        self.errors = 0
        self.elapsed = 0.0
        # Per request, when tracing (None: off): (sent at, tag, worker id, prompt tokens, cached tokens,
        # TTFT seconds or None). The worker id is what the stack reports in nvext (None where it does not).
        self.trace: list[tuple] | None = None


async def stream_one(session: aiohttp.ClientSession, url: str, body: dict, result: Result,
                     text: list[str] | None = None) -> float | None:
    """Stream one request into `result` (its content pieces into `text`, when given); returns its
    TTFT in seconds (None: failed, or no token)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    headers = body.pop("_headers", None)  # request headers (e.g. an agent session id), not part of the JSON
    tag = body.pop("_tag", None)  # the request's label in a trace, not part of the JSON
    if result.trace is not None:
        body["nvext"] = {**body.get("nvext", {}), "extra_fields": ["worker_id"]}
    start = time.perf_counter()
    first = last = worker = None
    events = 0
    usage = None
    async with session.post(url, json=body, headers=headers) as resp:
        if resp.status != 200:
            result.errors += 1
            await resp.read()
            return None
        async for raw in resp.content:
            chunk = sse_chunk(raw)
            if chunk is None:
                continue
            if chunk.get("usage"):
                usage = chunk["usage"]
            if worker is None and chunk.get("nvext"):
                worker = (chunk["nvext"].get("worker_id") or {}).get("decode_worker_id")
            choices = chunk.get("choices") or []
            piece = choices and (choices[0].get("delta", {}).get("content") or choices[0].get("text"))
            if piece:
                if text is not None:
                    text.append(piece)
                last = time.perf_counter()
                if first is None:
                    first = last
                events += 1
    result.requests += 1
    result.events += events
    if result.trace is not None:
        cached = ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        result.trace.append((start, tag, worker, (usage or {}).get("prompt_tokens"), cached,
                             None if first is None else first - start))
    if first is not None:
        result.ttft.append(first - start)
    if usage:
        result.tokens += usage["completion_tokens"]
        result.prompt_tokens += usage["prompt_tokens"]
        result.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        if usage["completion_tokens"] > 1 and first is not None:
            result.itl.append((last - first) / (usage["completion_tokens"] - 1))
    return None if first is None else first - start


async def run_load(url: str, make_body: Callable[[int], dict], total: int, concurrency: int,
                   fresh_connections: bool = False, warmup: dict | None = None) -> Result:
    result = Result()
    next_index = iter(range(total))
    connector = aiohttp.TCPConnector(limit=0, force_close=fresh_connections)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup is not None:
            await stream_one(session, url, warmup, Result())

        async def worker() -> None:
            for index in next_index:
                await stream_one(session, url, make_body(index), result)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - start
    return result


async def run_open_loop(session: aiohttp.ClientSession, url: str, bodies: list[dict], rate: float, seed: int,
                        result: Result) -> list[float | None]:
    """Send `bodies` in order at Poisson arrival times of mean `rate` per second, each on its own
    task whether or not earlier ones have answered (an open loop: the offered load does not bend
    to the server's speed, so two stacks see the same load). Returns each body's TTFT (None:
    failed) once all have answered; `result.elapsed` runs from the first send to the last answer."""
    pause = random.Random(seed)
    tasks = []
    start = due = time.perf_counter()
    for body in bodies:
        due += pause.expovariate(rate)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(stream_one(session, url, body, result)))
    ttfts = await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    return list(ttfts)


def print_table(title: str, head: tuple[str, ...], rows: list[tuple]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        cells = [row[0]] + [f"{v:.1f}" if isinstance(v, float) and abs(v) >= 10 else
                            f"{v:.2f}" if isinstance(v, float) else str(v) for v in row[1:]]
        print("| " + " | ".join(cells) + " |")

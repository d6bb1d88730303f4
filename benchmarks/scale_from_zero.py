"""A burst of requests at a model scaled to zero, its worker brought back by an autoscaler a moment
later: what the clients get, ours (`--wait-for-workers-secs`) and NVIDIA Dynamo 1.6.1 (`--anchor`) side
by side.

Per stack: a frontend and one mocker serve the model; the mocker is stopped with SIGTERM (as a scale-down
to zero stops it) and the frontend is left with no worker; `--requests` chat requests arrive at once, and
`--react-secs` later (what an autoscaler takes to see the demand: KEDA's pollingInterval plus a scrape) a new
worker starts. Columns: requests answered, refused (by status), how long the answered ones took from their
send, the worker's own start time (a floor for them), and the demand an autoscaler could read meanwhile
(`dynamo_frontend_queued_requests` at its peak: what a KEDA prometheus trigger scales from zero on).

    python -m benchmarks.scale_from_zero [--anchor] [--requests 16] [--react-secs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from benchmarks.loadgen import pct, print_table
from benchmarks.routing_quality import stack_env
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until


def serving(cluster: Cluster, stack: str) -> bool:
    """Whether the frontend has a worker for the model (NVIDIA Dynamo's lists the model only then)."""
    return cluster.worker_count("tiny") > 0 if stack == "ours" else "tiny" in cluster.models()


async def burst(url: str, model: str, n: int, timeout: float) -> list[tuple[int, float]]:
    """(status, seconds) of `n` chat requests sent at once."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}

    async def one(session: aiohttp.ClientSession) -> tuple[int, float]:
        start = time.monotonic()
        try:
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                await resp.read()
                return resp.status, time.monotonic() - start
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return 0, time.monotonic() - start

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return list(await asyncio.gather(*(one(session) for _ in range(n))))


def peak_queued(cluster: Cluster, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        status, body = http_get(cluster.base_url + "/metrics")
        if status == 200:
            out.append(metric_value(body.decode(), "dynamo_frontend_queued_requests") or 0.0)
        time.sleep(0.1)


def run_once(stack: str, model: Path, args) -> dict:
    env, python = stack_env(stack)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=f"zero-{stack}-")), model, "file", env, python=python)
    try:
        first = cluster.mocker("--speedup-ratio", "10", model_name="tiny")
        extra = ["--wait-for-workers-secs", "120"] if stack == "ours" else []
        cluster.frontend(*extra)
        wait_until(lambda: cluster.models() == ["tiny"], 120, "the model listed")
        time.sleep(2)
        first.kill(signal.SIGTERM)
        wait_until(lambda: not first.alive(), 30, "the worker gone")
        wait_until(lambda: not serving(cluster, stack), 60, "the frontend to see no worker")
        time.sleep(1)
        stop, queued = threading.Event(), []
        watcher = threading.Thread(target=peak_queued, args=(cluster, stop, queued), daemon=True)
        watcher.start()
        started: dict[str, float] = {}

        def scale_up() -> None:
            time.sleep(args.react_secs)
            started["at"] = time.monotonic()
            cluster.mocker("--speedup-ratio", "10", model_name="tiny")
            wait_until(lambda: serving(cluster, stack), 120, "the new worker")
            started["ready"] = time.monotonic()

        autoscaler = threading.Thread(target=scale_up, daemon=True)
        sent = time.monotonic()
        autoscaler.start()
        results = asyncio.run(burst(cluster.base_url, "tiny", args.requests, 150))
        autoscaler.join(150)
        stop.set()
        watcher.join(5)
        ok = [s for code, s in results if code == 200]
        return {"ok": len(ok), "refused": dict(collections.Counter(code for code, _ in results if code != 200)),
                "p50": pct(ok, 0.5) if ok else float("nan"), "max": max(ok) if ok else float("nan"),
                "worker_up": started.get("ready", float("nan")) - sent, "queued": max(queued, default=0.0)}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", action="store_true", help="also NVIDIA Dynamo 1.6.1 (.venv-anchor)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--react-secs", type=float, default=2.0)
    args = parser.parse_args()
    from tests.conftest import copy_tiny_model

    model = copy_tiny_model(Path(tempfile.mkdtemp(prefix="zero-model-")) / "tiny")
    rows = []
    for stack in ("ours", "anchor") if args.anchor else ("ours",):
        r = run_once(stack, model, args)
        refused = ", ".join(f"{n}x {code or 'no answer'}" for code, n in sorted(r["refused"].items())) or "-"
        rows.append(("ours (--wait-for-workers-secs 120)" if stack == "ours" else "Dynamo 1.6.1", r["ok"], refused,
                     r["p50"], r["max"], r["worker_up"], r["queued"]))
    print_table(f"Scale from zero: {args.requests} chat requests at a model with no worker, a worker started "
                f"{args.react_secs:g} s later (mocker, speedup 10)",
                ("stack", "answered", "refused", "answered in p50 s", "max s", "worker up after s",
                 "queued_requests peak"), rows)


if __name__ == "__main__":
    main()

"""The global router's cost and correctness, ours and NVIDIA Dynamo 1.6.1's side by side (`--anchor`), in
the layout of Dynamo's bare-process example (examples/global_planner/local): two aggregated mocker pools, each
behind its own `python -m dynamo.router` in its own namespace, a global router choosing the pool by
`nvext.router.ttft_target` (< 500 ms: pool 0, else pool 1), a frontend seeing only the global router.

Half of the requests ask for a tight TTFT target, half for a relaxed one: `pool ok` is the fraction that
landed in the pool their target calls for (from the mockers' own request counters). The `direct` row is
the same two mockers behind the frontend alone (round-robin, no global or local router): what the two extra
hops cost. Streaming chat, closed loop at `--concurrency`.

    python -m benchmarks.global_router_bench [--anchor] [--requests 400] [--concurrency 16] [--speedup 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from benchmarks.loadgen import cpu_seconds, pct, print_table, run_load
from benchmarks.routing_quality import stack_env
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

POOLS = ["agg_pool_0", "agg_pool_1"]
FRONT_NS = "grbench"
PLAN = {"mode": "agg", "num_agg_pools": 2, "agg_pool_dynamo_namespaces": POOLS,
        "agg_pool_selection_strategy": {"ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 2,
                                        "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1,
                                        "agg_pool_mapping": [[0], [1]]}}
TARGETS = (100, 900)  # request i asks for TARGETS[i % 2]: pool i % 2


def served(worker) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0.0


def start_layout(cluster: Cluster, model: Path, layout: str, speedup: str) -> tuple[list, list]:
    """(pool workers, every process of the layout but the frontend) once started."""
    workers, procs = [], []
    pool_model = "pool-tiny"  # distinct from the public name: Dynamo's frontend discovers across namespaces
    for ns in POOLS:
        endpoint = f"{ns}.backend.generate"
        args = ["--speedup-ratio", speedup]
        if layout == "global":
            args += ["--endpoint", f"dyn://{endpoint}"]
        worker = cluster.mocker(*args, env={"DYN_NAMESPACE": ns if layout == "global" else FRONT_NS},
                                model_name=pool_model if layout == "global" else str(model))
        workers.append(worker)
        if layout == "global":
            procs.append(cluster.start("dynamo.router", ["--endpoint", endpoint, "--router-block-size", "16"],
                                       env={"DYN_NAMESPACE": ns}, name=f"router-{ns}"))
    procs += workers
    if layout == "global":
        plan = cluster.tmp / "plan.json"
        plan.write_text(json.dumps(PLAN))
        time.sleep(3)  # Dynamo's global router connects to the pools' routers once, at start
        procs.append(cluster.start("dynamo.global_router", ["--config", str(plan), "--model-name", str(model),
                                                            "--namespace", FRONT_NS], name="global-router"))
    return workers, procs


def run_once(stack: str, layout: str, model: Path, args) -> dict:
    env, python = stack_env(stack)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=f"grbench-{stack}-")), model, "file", env, python=python)
    try:
        workers, procs = start_layout(cluster, model, layout, args.speedup)
        frontend = cluster.frontend("--namespace", FRONT_NS, "--router-mode", "round-robin")
        wait_until(lambda: str(model) in cluster.models(), 120, "the model listed")
        time.sleep(3)  # every hop warm (the anchor's /health does not name its workers)
        body = lambda i: {"model": str(model), "max_tokens": args.max_tokens,  # noqa: E731
                          "messages": [{"role": "user", "content": f"request {i}: " + "lorem ipsum dolor " * 30}],
                          "nvext": {"router": {"ttft_target": TARGETS[i % 2]}}}
        before = [served(w) for w in workers]
        cpu = [cpu_seconds(p.pid) for p in (frontend, *procs)]
        # a new connection per request: NVIDIA Dynamo 1.6.1 stalls ~40 ms on a reused one (no TCP_NODELAY)
        res = asyncio.run(run_load(cluster.base_url + "/v1/chat/completions", body, args.requests, args.concurrency,
                                   fresh_connections=True))
        after = [served(w) - b for w, b in zip(workers, before)]
        cpu_ms = sum(cpu_seconds(p.pid) for p in (frontend, *procs)) - sum(cpu)
        expected = [(args.requests + 1 - i) // 2 for i in range(2)]
        right = sum(min(a, e) for a, e in zip(after, expected)) / max(args.requests, 1)
        return {"ttft50": pct(res.ttft, 0.5) * 1e3, "ttft99": pct(res.ttft, 0.99) * 1e3,
                "rps": res.requests / res.elapsed, "pool_ok": right if layout == "global" else float("nan"),
                "served": "/".join(str(int(a)) for a in after), "errors": res.errors,
                "cpu": cpu_ms * 1e3 / max(res.requests, 1)}
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", action="store_true", help="also NVIDIA Dynamo 1.6.1 (.venv-anchor)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--speedup", default="10")
    args = parser.parse_args()
    from tests.conftest import copy_tiny_model

    model = copy_tiny_model(Path(tempfile.mkdtemp(prefix="grbench-model-")) / "tiny")
    rows = []
    for stack in ("ours", "anchor") if args.anchor else ("ours",):
        for layout in ("global", "direct"):
            r = run_once(stack, layout, model, args)
            rows.append((f"{stack} {layout}", r["ttft50"], r["ttft99"], r["rps"], r["pool_ok"], r["served"],
                         r["errors"], r["cpu"]))
    print_table(f"Global router: 2 agg mocker pools, {args.requests} chat streams, concurrency {args.concurrency}, "
                f"speedup {args.speedup}", ("stack layout", "TTFT p50 ms", "TTFT p99 ms", "req/s", "pool ok",
                                             "served pool0/pool1", "errors", "CPU ms/req (all procs)"), rows)


if __name__ == "__main__":
    main()

"""KV indexer and router micro-benchmarks (pure Python, single thread).

Prints one table row per (blocks, workers) case: events applied/s (and blocks/s; also per
second of this thread's CPU time, which a shared machine's load does not dilute),
find_matches p50/p99 in microseconds, and the same walk on a baseline tree that keeps a
Python set of workers per node (the obvious design) for comparison; then KvRouter.select()
overhead per request, hashing included.

Workload: chains of 64 blocks; each chain starts with one of 32 shared "system prompt"
prefixes (0-32 blocks) and is stored by one random (worker, dp_rank) in events of 16
blocks chained by parent hash. Queries are stored chains plus a few unseen blocks.

    .venv/bin/python benchmarks/indexer_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from dynamo.router.config import KvRouterConfig
from dynamo.router.indexer import KvIndexer
from dynamo.router.kv_router import KvRouter
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvStored, RouterEvent, StoredBlock

CHAIN = 64
EVENT_BLOCKS = 16


def make_chains(total_blocks: int, rng: random.Random) -> list[list[int]]:
    prefixes = [[rng.getrandbits(64) for _ in range(rng.randint(0, 32))] for _ in range(32)]
    chains = []
    for _ in range(total_blocks // CHAIN):
        prefix = rng.choice(prefixes)
        chains.append(prefix + [rng.getrandbits(64) for _ in range(CHAIN - len(prefix))])
    return chains


def make_events(chains: list[list[int]], workers: int, rng: random.Random) -> tuple[list[RouterEvent], list[int]]:
    events, owners, next_id = [], [], {}
    for chain in chains:
        worker = rng.randrange(workers)
        owners.append(worker)
        ext = [rng.getrandbits(63) for _ in chain]
        for start in range(0, len(chain), EVENT_BLOCKS):
            blocks = [StoredBlock(block_hash=e, tokens_hash=h)
                      for e, h in zip(ext[start:start + EVENT_BLOCKS], chain[start:start + EVENT_BLOCKS])]
            event_id = next_id.get(worker, 0)
            next_id[worker] = event_id + 1
            data = KvStored(parent_hash=ext[start - 1] if start else None, blocks=blocks)
            events.append(RouterEvent(worker_id=worker, event=KvCacheEvent(event_id=event_id, data=data)))
    return events, owners


class SetNode:
    __slots__ = ("children", "workers")

    def __init__(self) -> None:
        self.children: dict[int, SetNode] = {}
        self.workers: set[int] = set()


def baseline_tree(chains: list[list[int]], owners: list[int]) -> SetNode:
    """Same content as the indexer, one Python set of workers per node."""
    root = SetNode()
    for chain, worker in zip(chains, owners):
        node = root
        for h in chain:
            node = node.children.setdefault(h, SetNode())
            node.workers.add(worker)
    return root


def baseline_find(root: SetNode, hashes) -> dict[int, int]:
    scores: dict[int, int] = {}
    node, active, depth = root, None, 0
    for h in hashes:
        child = node.children.get(h)
        if child is None:
            break
        new = set(child.workers) if active is None else active & child.workers
        if active is not None:
            for w in active - new:
                scores[w] = depth
        active = new
        if not active:
            break
        depth += 1
        node = child
    for w in active or ():
        scores[w] = depth
    return scores


def rss_mb() -> float:
    """Current resident set size (Linux), not the high-water mark."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    samples = sorted(samples_ns)
    return samples[len(samples) // 2] / 1e3, samples[int(len(samples) * 0.99)] / 1e3


def time_calls(fn, queries, clock=time.perf_counter_ns) -> tuple[float, float]:
    out = []
    for q in queries:
        t0 = clock()
        fn(q)
        out.append(clock() - t0)
    return percentiles(out)


def bench_indexer(total_blocks: int, workers: int, n_queries: int) -> dict:
    rng = random.Random(total_blocks + workers)
    chains = make_chains(total_blocks, rng)
    events, owners = make_events(chains, workers, rng)
    queries = [rng.choice(chains) + [rng.getrandbits(64) for _ in range(4)] for _ in range(n_queries)]
    gc.collect()
    gc.disable()  # the tree is long-lived; measure the indexer, not the cyclic GC
    rss0 = rss_mb()
    idx = KvIndexer()
    t0, c0 = time.perf_counter(), time.thread_time()
    for ev in events:
        idx.apply_event(ev)
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    tree_mb = rss_mb() - rss0
    p50, p99 = time_calls(idx.find_matches, queries)
    # The same on this thread's CPU clock: on a shared machine, time spent descheduled is left out.
    _, cpu_p99 = time_calls(idx.find_matches, queries, time.thread_time_ns)
    base = baseline_tree(chains, owners)
    b50, b99 = time_calls(lambda q: baseline_find(base, q), queries)
    matched = statistics.mean(max(idx.find_matches(q).scores.values(), default=0) for q in queries[:200])
    gc.enable()
    return {"blocks": total_blocks, "workers": workers, "nodes": idx.tree.node_count,
            "events_s": len(events) / elapsed, "blocks_s": total_blocks / elapsed,
            "events_cpu_s": len(events) / cpu, "cpu_p99": cpu_p99,
            "p50": p50, "p99": p99, "base_p50": b50, "base_p99": b99, "depth": matched, "tree_mb": tree_mb}


def bench_select(workers: int, block_size: int, isl: int, inflight: int, n: int) -> dict:
    rng = random.Random(workers)
    router = KvRouter(block_size, KvRouterConfig(), rng=rng)
    for w in range(workers):
        router.add_worker(w)
    system = [rng.randrange(32000) for _ in range(isl // 2)]
    prompts = [system + [rng.randrange(32000) for _ in range(isl - len(system))] for _ in range(n + inflight)]
    for i, p in enumerate(prompts[:inflight]):  # steady state: `inflight` requests booked
        router.add_request(f"w{i}", router.select(p, request_id=f"w{i}"), p)
    clock = time.perf_counter_ns
    sel_ns, cycle_ns = [], []
    for i, p in enumerate(prompts[inflight:]):
        rid = f"r{i}"
        t0 = clock()
        sel = router.select(p, request_id=rid)
        t1 = clock()
        router.add_request(rid, sel, p)
        router.free(f"w{i}" if i < inflight else f"r{i - inflight}")
        cycle_ns.append(clock() - t0)
        sel_ns.append(t1 - t0)
    s50, s99 = percentiles(sel_ns)
    c50, c99 = percentiles(cycle_ns)
    return {"workers": workers, "isl": isl, "blocks": isl // block_size, "inflight": inflight,
            "select_p50": s50, "select_p99": s99, "cycle_p50": c50, "cycle_p99": c99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^5 blocks only")
    parser.add_argument("--queries", type=int, default=5000)
    args = parser.parse_args()
    sizes = [10**5] if args.quick else [10**5, 10**6]
    print("## Indexer (bitmask radix tree) vs baseline (set per node), find_matches on 68-block prompts")
    print(f"{'blocks':>8} {'workers':>7} {'nodes':>8} {'events/s':>10} {'blocks/s':>10} "
          f"{'p50 us':>7} {'p99 us':>7} {'base p50':>8} {'base p99':>8} {'depth':>5} {'tree MB':>7} "
          f"{'events/CPU s':>12} {'p99 CPU us':>10}")
    for total in sizes:
        for workers in (8, 64):
            r = bench_indexer(total, workers, args.queries)
            print(f"{r['blocks']:>8} {r['workers']:>7} {r['nodes']:>8} {r['events_s']:>10,.0f} "
                  f"{r['blocks_s']:>10,.0f} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['base_p50']:>8.1f} "
                  f"{r['base_p99']:>8.1f} {r['depth']:>5.1f} {r['tree_mb']:>7.0f} {r['events_cpu_s']:>12,.0f} "
                  f"{r['cpu_p99']:>10.1f}")
            gc.collect()
    print()
    print("## KvRouter.select() per request (hashing + find_matches + load projection + cost), block_size 16")
    print(f"{'workers':>7} {'isl':>6} {'blocks':>6} {'inflight':>8} {'select p50':>10} {'select p99':>10} "
          f"{'cycle p50':>9} {'cycle p99':>9}   (us; cycle = select + add_request + free)")
    for workers in (8, 64):
        for isl in (1024, 8192):
            r = bench_select(workers, 16, isl, inflight=256, n=2000)
            print(f"{r['workers']:>7} {r['isl']:>6} {r['blocks']:>6} {r['inflight']:>8} {r['select_p50']:>10.1f} "
                  f"{r['select_p99']:>10.1f} {r['cycle_p50']:>9.1f} {r['cycle_p99']:>9.1f}")


if __name__ == "__main__":
    main()

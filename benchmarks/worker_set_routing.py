"""What worker-set routing (`dynamo/frontend/worker_sets.py`) costs a request: µs per `place` + `limit` (decode
pool) with one namespace (the common case, the baseline), two (a rolling update), and two with the old set's
workers inhibited (draining), in the same run.

    .venv/bin/python benchmarks/worker_set_routing.py [--workers 16] [--number 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import print_table
from dynamo.frontend.worker_sets import SetRouting
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import Role
from dynamo.runtime.wire import ErrorCode
from tests.frontend.test_worker_sets import model, request


def per_request_us(layout: dict[str, tuple[int, int]], number: int, inhibit: str | None = None) -> float:
    entry = model(layout)
    inhibitor = Inhibitor(3600.0)
    for iid, worker in entry.workers.items():
        if worker.endpoint.namespace == inhibit:
            inhibitor.inhibit(iid, ErrorCode.DRAINING)
    routing, req, pool = SetRouting(random.Random(0), inhibitor=inhibitor), request(), entry.pool(Role.DECODE)
    exclude: set[int] = set()
    best = min(timeit.repeat(lambda: routing.limit(entry, routing.place(entry, req), pool, req, exclude),
                             number=number, repeat=3))
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16, help="decode workers per set (and as many prefill)")
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    n = args.workers
    rows = [("one set (baseline)", per_request_us({"a": (n, n)}, args.number)),
            ("two sets", per_request_us({"a": (n, n), "b": (n, n)}, args.number)),
            ("two sets, old one draining", per_request_us({"a": (n, n), "b": (n, n)}, args.number, "a"))]
    print_table(f"worker-set routing, {n} decode + {n} prefill workers per set", ("case", "µs per place + limit"),
                rows)


if __name__ == "__main__":
    main()

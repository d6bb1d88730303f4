"""`python -m dynamo.deploy run FILE`: the graph of a DGD manifest as supervised local
processes, with a live status table and a control endpoint for scaling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from dynamo.deploy.control import ControlServer
from dynamo.deploy.dynamo_model import AdapterReconciler, load_models
from dynamo.deploy.model import Graph
from dynamo.deploy.parsers import module_available
from dynamo.deploy.plan import RunOptions, build_plans, parse_append_args, parse_overrides, parse_volumes
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import load_documents, validate_file
from dynamo.runtime.process import configure_logging


def load_graph(path: str) -> Graph:
    report = validate_file(path)
    for line in report.lines():
        print(line, file=sys.stderr)
    if report.errors:
        raise SystemExit(2)
    if len(report.graphs) != 1:
        print(f"{path}: run takes exactly one DynamoGraphDeployment, found {len(report.graphs)}", file=sys.stderr)
        raise SystemExit(2)
    return report.graphs[0]


def status_table(sup: Supervisor) -> str:
    rows = [("SERVICE", "REPLICA", "PID", "STATE", "HTTP", "SYSTEM", "RESTARTS", "UPTIME")]
    for info in sup.status():
        rows.append((info["service"], str(info["replica"]), str(info["pid"] or "-"), info["state"],
                     str(info["http_port"] or "-"), str(info["system_port"] or "-"), str(info["restarts"]),
                     f"{info['uptime_s']:.0f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(["-" * len(lines[0]), *lines, "-" * len(lines[0])])


async def print_status(sup: Supervisor, stop: asyncio.Event, every: float = 30.0,
                       adapters: AdapterReconciler | None = None) -> None:
    """Reprint the table when states change (at most once a second) and every `every` s."""
    seen, last = -1, 0.0
    while not stop.is_set():
        now = time.monotonic()
        if sup.version != seen or now - last >= every:
            seen, last = sup.version, now
            sup._print(status_table(sup) + (f"\n{adapters.table()}" if adapters and adapters.models else ""))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def serve(args: argparse.Namespace, graph: Graph, state_dir: str, pods_dir: str) -> int:
    try:
        opts = RunOptions(frontend_port=args.frontend_port, model=args.model, namespace=args.namespace,
                          state_dir=state_dir, append_args=parse_append_args(args.append_args),
                          volumes=parse_volumes(args.volumes), pods_dir=pods_dir,
                          prometheus_endpoint=getattr(args, "prometheus_endpoint", None))
        plans = build_plans(graph, opts, parse_overrides(args.overrides))
        models = load_models(load_documents(args.file), graph)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = sorted({m for p in plans.values() for m in p.modules if not module_available(m)})
    if missing:
        print(f"error: this image does not provide {', '.join(missing)}; cannot run {args.file}", file=sys.stderr)
        return 2
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    sup = Supervisor(plans, log_dir=args.log_dir, grace=args.grace)
    control = ControlServer(sup, graph.metadata.name, args.control_port)
    adapters = AdapterReconciler(sup, graph, models)
    control.models = adapters.status
    port = await control.start()
    url = f"http://127.0.0.1:{port}"
    opts.control_url = url  # planner components scale the graph through it (DYN_DEPLOY_CONTROL_URL)
    with open(os.path.join(state_dir, "control.json"), "w", encoding="utf-8") as fh:
        json.dump({"url": url, "pid": os.getpid()}, fh)
    print(f"dynamo.deploy: running {graph.metadata.name} ({args.file}); control {url}; state {state_dir}; "
          f"pods' /tmp {pods_dir}/<replica>", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    printer = None if args.no_status else asyncio.create_task(print_status(sup, stop, adapters=adapters))
    placer = asyncio.create_task(adapters.run(stop))
    try:
        await sup.run(stop)
    finally:
        stop.set()
        await placer
        if printer:
            await printer
        await control.stop()
        print("dynamo.deploy: all replicas stopped", flush=True)
    return 0


def main(args: argparse.Namespace) -> int:
    configure_logging()
    if args.model and not os.path.exists(args.model):
        print(f"error: --model {args.model}: no such path", file=sys.stderr)
        return 2
    graph = load_graph(args.file)
    state_dir = tempfile.mkdtemp(prefix=f"dynamo-run-{graph.metadata.name}-")
    pods_dir = tempfile.mkdtemp(prefix="dyn-pods-")  # short: engines put unix sockets in TMPDIR
    try:
        return asyncio.run(serve(args, graph, state_dir, pods_dir))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(pods_dir, ignore_errors=True)

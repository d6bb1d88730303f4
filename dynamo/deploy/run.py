"""`python -m dynamo.deploy run FILE`: the graph of a DGD manifest as supervised local
processes, with a live status table and a control endpoint for scaling and applying a changed
manifest (`local_rollout.py` rolls it out)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from dynamo.deploy import config_maps, contract, graph_autoscalers, local, local_autoscalers
from dynamo.deploy.control import ControlServer
from dynamo.deploy.devices import DeviceLedger, detect_gpus
from dynamo.deploy.dynamo_model import AdapterReconciler, DynamoModel, load_models
from dynamo.deploy.local_rollout import PROGRESS_DEADLINE, ApplyRequest, Applier, Halted, Refused
from dynamo.deploy.log_files import LogRotation
from dynamo.deploy.model import Graph
from dynamo.deploy.parsers import module_available
from dynamo.deploy.plan import build_plans
from dynamo.deploy.run_options import RunOptions, parse_append_args, parse_overrides, parse_volumes
from dynamo.deploy.supervisor import MAX_REPLICAS, Supervisor, check_replicas
from dynamo.deploy.validate import load_documents, validate_file
from dynamo.runtime.net import free_port
from dynamo.runtime.process import configure_logging
from dynamo.worker.hub_cache import is_repo_id

log = logging.getLogger("dynamo.deploy")


def load_graphs(path: str) -> list[Graph]:
    """The file's graphs (several: NVIDIA Dynamo's hierarchical examples put a control graph and its pool
    graphs in one file), after validation; exits 2 on errors."""
    report = validate_file(path)
    for line in report.lines():
        print(line, file=sys.stderr)
    if report.errors:
        raise SystemExit(2)
    if not report.graphs:
        print(f"{path}: no DynamoGraphDeployment to run", file=sys.stderr)
        raise SystemExit(2)
    return report.graphs


def status_table(sup: Supervisor, title: str = "") -> str:
    rows = [("SERVICE", "REPLICA", "PID", "STATE", "HTTP", "SYSTEM", "RESTARTS", "UPTIME")]
    for info in sup.status():
        rows.append((info["service"], str(info["replica"]), str(info["pid"] or "-"), info["state"],
                     _http_cell(info), str(info["system_port"] or "-"), str(info["restarts"]),
                     f"{info['uptime_s']:.0f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    rule = "-" * len(lines[0])
    return "\n".join([f"{title} {rule[len(title) + 1:]}" if title else rule, *lines, rule])


def _http_cell(info: dict) -> str:
    """A replica's HTTP port; a frontend on its service's shared socket: that port, then its own in brackets."""
    own = str(info["http_port"] or "-")
    return f"{info['listen_port']} ({own})" if info.get("listen_port") else own


async def print_status(sup: Supervisor, stop: asyncio.Event, every: float = 30.0,
                       adapters: AdapterReconciler | None = None, title: str = "") -> None:
    """Reprint the table when states change (at most once a second) and every `every` s."""
    seen, last = -1, 0.0
    while not stop.is_set():
        now = time.monotonic()
        if sup.version != seen or now - last >= every:
            seen, last = sup.version, now
            sup._print(status_table(sup, title) + (f"\n{adapters.table()}" if adapters and adapters.models else ""))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


@dataclass
class GraphRun:
    """One graph of the file, supervised: its plans, supervisor, control endpoint and adapters."""

    graph: Graph
    opts: RunOptions
    sup: Supervisor
    control: ControlServer
    adapters: AdapterReconciler
    title: str = ""
    autoscaling: graph_autoscalers.GraphAutoscalers | None = None  # the file's HPAs / ScaledObjects on it
    overrides: dict[str, int] = field(default_factory=dict)  # its --set counts (applied again by an apply)
    ledger: DeviceLedger | None = None
    applier: Applier | None = None
    applying: asyncio.Lock = field(default_factory=asyncio.Lock)  # one apply at a time, in the order posted

    async def apply(self, req: ApplyRequest) -> dict:
        """POST /apply: the manifest's graph of this name, expanded into plans as at startup (with this run's
        --set / --append-args / --model / --volume), then diffed and rolled out by the Applier; the file's
        HPAs / ScaledObjects and DynamoModels for this graph replace the running ones (`graph_autoscalers`,
        `AdapterReconciler.replace`). The expansion runs off the event loop (it reads files, may look a model
        up): probes and streams go on meanwhile. It touches no shared state there: it claims no devices (each
        replica claims at its launch, on the loop) and ConfigMaps are written to new content-named directories
        (`config_maps.mounts`). Everything that can refuse the apply does so before anything changes."""
        async with self.applying:
            if self.sup.halted():
                raise Halted("the run is stopping")
            graph, plans, namespace, documents, models = await asyncio.to_thread(self._plans_of, req)
            assert self.applier is not None and self.autoscaling is not None
            scaling = self.autoscaling.prepare(documents, graph)  # validated: builds (ValueError: a 400)
            # the new set decides whose count the manifest's replicas may set, so it comes before the diff
            applied = self.applier.apply(graph, plans, self.autoscaled(scaling.owned), namespace, req.deadline_s)
            applied["notes"] += set_notes(graph, self.overrides)
            self.graph = graph
            newly = set(scaling.held) - set(self.autoscaling.held)
            stopped = self.autoscaling.commit(scaling)
            free = set(plans) - self.autoscaled(scaling.owned)  # a planner's workers are still its own
            scaling.released = [s for s in scaling.released if s in free]
            applied["notes"] += scaling.notes + self.autoscaling.ownership_notes(
                scaling, newly & (set(plans) - self.autoscaled(scaling.services)), self._replicas)
            applied["autoscalers"] = self.autoscaling.summary(scaling)
            applied["models"] = self.adapters.replace(graph, models)
            await asyncio.gather(*stopped, return_exceptions=True)  # their drivers are gone when this answers
            return applied

    def _plans_of(self, req: ApplyRequest) -> tuple[Graph, dict, str, list, list[DynamoModel]]:
        graph, documents, graphs = manifest_graph(req.manifest, self.opts.state_dir, self.graph.metadata.name,
                                                  req.source)
        # the file's other graphs are other runs' (their DynamoModels theirs); ValueError: refused, as at startup
        models = load_models(documents, graph, graphs)
        present = set(graph.spec.services)
        opts = dataclasses.replace(self.opts, config_maps=config_maps.collect(documents),
                                   append_args={k: v for k, v in self.opts.append_args.items() if k in present})
        plans = build_plans(graph, opts, {k: v for k, v in self.overrides.items() if k in present},
                            devices=[], ledger=self.ledger, claim=False, paths=True)
        for name, plan in plans.items():
            check_replicas(name, plan.replicas)
        missing = sorted({m for p in plans.values() for m in p.modules if not module_available(m)})
        if missing:
            raise ValueError(f"this image does not provide {', '.join(missing)}")
        return graph, plans, opts.namespace, documents, models

    @property
    def scalers(self) -> list[local_autoscalers.LocalAutoscaler]:
        """The HPAs / ScaledObjects evaluated on this graph now."""
        return list(self.autoscaling or ())

    def autoscaled(self, scaled: set[str] | None = None) -> set[str]:
        """The services whose replicas something else owns here: an HPA / ScaledObject of the file (`scaled`:
        an apply's new set; else the running one), or the graph's planner (it scales the worker pools; the
        operator hands it the replicas field)."""
        owned = set({s.service for s in self.scalers} if scaled is None else scaled)
        if any(plan.planner for plan in self.sup.plans.values()):
            owned |= {name for name, plan in self.sup.plans.items() if plan.svc.componentType == "worker"}
        return owned

    async def serve(self, stop: asyncio.Event, show_status: bool) -> None:
        printer = asyncio.create_task(print_status(self.sup, stop, adapters=self.adapters, title=self.title)) \
            if show_status else None
        placer = asyncio.create_task(self.adapters.run(stop))
        if self.autoscaling is not None:  # an apply's new autoscalers are driven the same way
            self.autoscaling.start(lambda s: local_autoscalers.drive(
                s, lambda: self._replicas(s.service), lambda n: self._autoscale(s.service, n), stop))
        try:
            await self.sup.run(stop)
        finally:
            stop.set()  # one graph stopping stops the file's others
            if self.autoscaling is not None:
                await self.autoscaling.close()
            await placer
            if printer:
                await printer
            await self.control.stop()

    def _replicas(self, service: str) -> int:
        plan = self.sup.plans.get(service)
        return plan.replicas if plan is not None else 0

    def _autoscale(self, service: str, replicas: int) -> None:
        """An HPA's or ScaledObject's decision, held to run's replica limit (its maxReplicas may be higher)."""
        if service not in self.sup.plans:
            return  # an apply removed the service: its autoscaler has nothing left to scale
        if replicas > MAX_REPLICAS:
            log.warning("%s: autoscaler wants %d replicas; run's limit is %d", service, replicas, MAX_REPLICAS)
        self.sup.scale(service, min(replicas, MAX_REPLICAS))


def set_notes(graph: Graph, overrides: dict[str, int]) -> list[str]:
    """What an apply's replicas lose to run's --set (applied again, as at startup): said, as an autoscaler's are."""
    notes = [f"{name}: its replicas are run's --set {name}.replicas={count}: {count} kept, not the manifest's "
             f"{svc.replica_count}" for name, count in overrides.items()
             if (svc := graph.spec.services.get(name)) is not None and svc.replica_count != count]
    for note in notes:
        log.warning("apply: %s", note)
    return notes


def manifest_graph(text: str, state_dir: str, name: str, source: str | None = None) -> tuple[Graph, list, list[Graph]]:
    """The graph named `name` of a posted manifest, validated as `run` validates its file, the file's
    documents (its ConfigMaps) and all its graphs; ValueError for a manifest with errors (naming `source`, the
    file it was read from, not this temporary copy), Refused without that graph."""
    fd, path = tempfile.mkstemp(prefix="apply-", suffix=".yaml", dir=state_dir or None)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        report = validate_file(path)
        if report.errors:
            errors = [e.replace(path, source or "the manifest") for e in report.errors[:5]]
            raise ValueError("the manifest does not validate: " + "; ".join(errors))
        documents = load_documents(path)
    finally:
        os.remove(path)
    graphs = report.graphs
    found = [g for g in graphs if g.metadata.name == name]
    if found:
        return found[0], documents, graphs
    if len(graphs) == 1:
        raise Refused("metadata.name", f"this run's graph is {name!r}, the manifest's {graphs[0].metadata.name!r}; "
                      "a new name is a new graph (stop this run and run the file)")
    raise Refused("metadata.name", f"the manifest has no graph named {name!r}")


def _for_graph(given: dict, graph: Graph, used: set[str]) -> dict:
    """The entries of `given` (keyed SERVICE or GRAPH/SERVICE) for `graph`'s services; the keys taken go in `used`."""
    out = {}
    for key, value in given.items():
        for svc in graph.spec.services:
            if key in (svc, f"{graph.metadata.name}/{svc}"):
                out[svc] = value
                used.add(key)
    return out


def build_runs(args: argparse.Namespace, graphs: list[Graph], state_dir: str, pods_dir: str) -> list[GraphRun]:
    """A GraphRun per graph; every graph shares the discovery store, each has its own control endpoint.
    With several graphs, --set / --append-args name a service as SERVICE (in every graph having it) or
    GRAPH/SERVICE; the first graph with a frontend serves on --frontend-port."""
    documents = load_documents(args.file)
    maps = config_maps.collect(documents)
    overrides, appended = parse_overrides(args.overrides), parse_append_args(args.append_args)
    volumes = parse_volumes(args.volumes)
    several = len(graphs) > 1
    ledger = DeviceLedger(found) if (found := detect_gpus()) else None  # one machine's GPUs, for every graph
    used: set[str] = set()
    port_taken = False
    runs = []
    for graph in graphs:
        name = graph.metadata.name
        set_here, append_here = _for_graph(overrides, graph, used), _for_graph(appended, graph, used)
        has_frontend = any(contract.is_frontend(svc) for svc in graph.spec.services.values())
        opts = RunOptions(frontend_port=args.frontend_port if has_frontend and not port_taken else free_port(),
                          model=args.model, namespace=args.namespace, state_dir=state_dir, append_args=append_here,
                          volumes={pvc: d for pvc, d in volumes.items()
                                   if any(local.mount_points(svc, pvc) for svc in graph.spec.services.values())},
                          pods_dir=os.path.join(pods_dir, name) if several else pods_dir,
                          prometheus_endpoint=getattr(args, "prometheus_endpoint", None), config_maps=maps,
                          engine=getattr(args, "engine", None))
        port_taken |= has_frontend
        plans = build_plans(graph, opts, set_here, ledger=ledger, paths=True)
        for svc_name, plan in plans.items():  # the manifest's or --set's count, held to what scale accepts
            check_replicas(f"{name}/{svc_name}" if several else svc_name, plan.replicas)
        sup = Supervisor(plans, log_dir=args.log_dir, grace=args.grace, label=name if several else "",
                         leftovers=(state_dir, pods_dir), log_rotation=log_rotation(args))
        runs.append(_graph_run(args, graph, graphs, documents, opts, sup, set_here, ledger, first=not runs))
    unknown = sorted(set(overrides) - used) or sorted(set(appended) - used)
    if unknown:
        raise ValueError(f"--set/--append-args: no service {unknown[0]!r} in {args.file}")
    unmounted = sorted(set(volumes) - {pvc for run in runs for pvc in run.opts.volumes})
    if unmounted:
        raise ValueError(f"--volume: no service mounts a volume named {unmounted[0]!r}")
    return runs


def _graph_run(args: argparse.Namespace, graph: Graph, graphs: list[Graph], documents: list, opts: RunOptions,
               sup: Supervisor, overrides: dict[str, int], ledger: DeviceLedger | None, first: bool) -> GraphRun:
    """One graph's run: its control endpoint (the first graph's on --control-port), DynamoModels (those of the
    file's other graphs are theirs), Applier and autoscalers."""
    several = len(graphs) > 1
    control = ControlServer(sup, graph.metadata.name, args.control_port if first else 0)
    adapters = AdapterReconciler(sup, graph, load_models(documents, graph, graphs))
    control.models = adapters.status
    run = GraphRun(graph, opts, sup, control, adapters, title=graph.metadata.name if several else "",
                   overrides=overrides, ledger=ledger,
                   applier=Applier(sup, graph, getattr(args, "progress_deadline", None) or PROGRESS_DEADLINE))
    control.applier, control.rollouts = run.apply, run.applier.status
    run.autoscaling = control.autoscalers = graph_autoscalers.at_startup(sup, documents, graph, args)
    return run


def log_rotation(args: argparse.Namespace) -> LogRotation:
    """--log-max-mb / --log-backups (absent when `run` is driven by another entry point: the defaults)."""
    default = LogRotation()
    max_mb = getattr(args, "log_max_mb", None)
    backups = getattr(args, "log_backups", None)
    if (max_mb is not None and max_mb < 0) or (backups is not None and backups < 0):
        raise ValueError("--log-max-mb and --log-backups must be >= 0")
    return LogRotation(max_bytes=default.max_bytes if max_mb is None else int(max_mb * 1024 * 1024),
                       backups=default.backups if backups is None else backups)


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    """Whether something listens on `port`: binding the wildcard address fails for a listener on any
    address. SO_REUSEADDR so that connections of a process that just exited (TIME_WAIT) do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def owned_ports_taken(args: argparse.Namespace, runs: list[GraphRun]) -> list[str]:
    """The fixed ports `run` serves on that another process holds. Checked before anything starts: a
    frontend that cannot bind would exit and be restarted forever, a control endpoint would not start."""
    owned = []
    if any(contract.is_frontend(svc) for run in runs for svc in run.graph.spec.services.values()):
        owned.append(("--frontend-port", args.frontend_port))
    if args.control_port:
        owned.append(("--control-port", args.control_port))
    return [f"{flag} {port} is in use by another process; pick a free port or stop what holds it"
            for flag, port in owned if port_in_use(port)]


async def serve(args: argparse.Namespace, graphs: list[Graph], state_dir: str, pods_dir: str) -> int:
    try:
        runs = build_runs(args, graphs, state_dir, pods_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    taken = owned_ports_taken(args, runs)
    if taken:
        for line in taken:
            print(f"error: {line}", file=sys.stderr)
        return 2
    missing = sorted({m for run in runs for p in run.sup.plans.values() for m in p.modules if not module_available(m)})
    if missing:
        print(f"error: this image does not provide {', '.join(missing)}; cannot run {args.file}", file=sys.stderr)
        return 2
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    urls = {}
    for run in runs:
        port = await run.control.start()
        # planner components scale their graph through it (DYN_DEPLOY_CONTROL_URL)
        run.opts.control_url = urls[run.graph.metadata.name] = f"http://127.0.0.1:{port}"
    for run in runs:
        run.opts.control_urls = urls  # a GlobalPlanner among them budgets and scales every graph of the file
    first = next(iter(urls.values()))
    with open(os.path.join(state_dir, "control.json"), "w", encoding="utf-8") as fh:
        json.dump({"url": first, "pid": os.getpid(), "graphs": urls}, fh)
    for run in runs:
        print(f"dynamo.deploy: running {run.graph.metadata.name} ({args.file}); control "
              f"{urls[run.graph.metadata.name]}; state {state_dir}; pods' /tmp {run.opts.pods_dir}/<replica>",
              flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.gather(*(run.serve(stop, not args.no_status) for run in runs))
    finally:
        stop.set()
        print("dynamo.deploy: all replicas stopped", flush=True)
    return 0


def local_model_arg(model: str) -> str:
    """--model as every worker can load it: an existing path made absolute (replicas run in other
    working directories, so a relative one would name nothing there), a Hugging Face id resolved as a
    manifest's is (local.local_model). ValueError / LookupError say why not."""
    if os.path.exists(model):
        return os.path.abspath(model)
    if is_repo_id(model):
        try:
            return local.local_model(model, dict(os.environ))
        except LookupError as exc:
            raise LookupError(f"--model {model}: no such path; as a Hugging Face id: {exc.args[0]}") from None
    raise ValueError(f"--model {model}: no such path")


def main(args: argparse.Namespace) -> int:
    configure_logging()
    if args.model:
        try:
            args.model = local_model_arg(args.model)
        except (ValueError, LookupError) as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
    graphs = load_graphs(args.file)
    state_dir = tempfile.mkdtemp(prefix=f"dynamo-run-{graphs[0].metadata.name}-")
    pods_dir = tempfile.mkdtemp(prefix="dyn-pods-")  # short: engines put unix sockets in TMPDIR
    try:
        return asyncio.run(serve(args, graphs, state_dir, pods_dir))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(pods_dir, ignore_errors=True)

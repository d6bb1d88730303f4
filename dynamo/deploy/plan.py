"""What `run` starts for each service replica: argv, environment, working dir, ports and
probes, derived from the manifest plus what the operator would inject, adapted to one
machine (free ports instead of 9090/8000, a private file discovery dir, local paths).
`$(VAR)` references in env values, command and args are expanded as the kubelet expands
them (`expansion`), with the values this replica gets."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dynamo.deploy import config_maps, contract, engines, expansion, local, names
from dynamo.deploy.commands import (MODEL_FLAGS, CommandLine, Invocation, flag_value, keep_served_name, model_of,
                                    parse_command, set_flag, swap_model)
from dynamo.deploy.devices import DeviceLedger, detect_gpus
from dynamo.deploy.frontend_socket import LISTEN_ENV, FrontendAddress, runs_frontend_itself, shared_address, socket_of
from dynamo.deploy.model import Graph, Service
from dynamo.deploy.run_options import RunOptions
from dynamo.runtime.net import free_port

log = logging.getLogger("dynamo.deploy")
REPO = Path(__file__).resolve().parents[2]
WORKER_MODULES = ("dynamo.mocker", "dynamo.vllm", "dynamo.sglang", "dynamo.trtllm")
# Modules given --model's directory in place of the manifest's model: the workers, and the global router
# (which builds its model cards from the model's files).
MODEL_MODULES = (*WORKER_MODULES, "dynamo.global_router")
_ZMQ_PORT = re.compile(r"^(tcp://[^:]+):(\d+)$")
# The operator's entries `run` sets to this machine's values (a manifest's own are left out for them).
_RUN_OWNED = frozenset({"DYN_NAMESPACE", "DYN_PARENT_DGD_K8S_NAME", "DYN_DISCOVERY_BACKEND", "DYN_SYSTEM_PORT",
                        "DYNAMO_PORT", "DYN_HTTP_PORT"})


@dataclass
class Launch:
    """Everything needed to (re)start one replica."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    http_port: int | None = None  # this replica's own (probes, metrics); a frontend's port unless `shared_port`
    system_port: int | None = None
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A frontend that inherits its service's listening socket (`listeners.py`): that socket's port and address.
    shared_port: int | None = None
    listen_host: str = "0.0.0.0"


def local_workdir(path: str | None) -> str:
    """The manifest's workingDir if it exists here, its repo-relative twin, else the repo."""
    if path and os.path.isdir(path):
        return path
    if path and path.startswith("/workspace/") and (REPO / path[len("/workspace/"):]).is_dir():
        return str(REPO / path[len("/workspace/"):])
    return str(REPO)


def discovery_env(graph: Graph, opts: RunOptions) -> dict[str, str]:
    """etcd when the manifest or the local environment names one, else a private file store."""
    manifest = contract.env_list(graph.spec.envs)
    etcd = manifest.get("ETCD_ENDPOINTS") or opts.environ.get("ETCD_ENDPOINTS")
    if etcd:
        return {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd}
    return {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": os.path.join(opts.state_dir, "kv")}


def _local_kv_events(args: list[str]) -> list[str]:
    """Give each replica its own ZMQ KV-event port (pods each have their own network)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg != "--kv-events-config":
            continue
        try:
            cfg = json.loads(out[i + 1])
        except ValueError:
            continue
        match = _ZMQ_PORT.match(str(cfg.get("endpoint", "")))
        if match:
            cfg["endpoint"] = f"{match.group(1)}:{free_port()}"
            out[i + 1] = json.dumps(cfg, separators=(",", ":"))
    return out


class ServicePlan:
    """A service's launch template; `launch(index)` makes one replica's `Launch`."""

    def __init__(self, graph: Graph, name: str, svc: Service, opts: RunOptions, discovery: dict[str, str]) -> None:
        self.graph, self.name, self.svc, self.opts = graph, name, svc, opts
        self.replicas = svc.replica_count
        self.frontend = contract.is_frontend(svc)
        self.planner = svc.componentType == "planner"
        self.gpus = svc.gpus()
        self.discovery = discovery
        self.command, self.args, _ = contract.command_of(svc)
        self.env_entries = contract.env_entries(svc, graph)
        # An envFrom Secret's keys come from this shell here (as its values do), so `$(HF_TOKEN)` resolves.
        self.env_from = dict(opts.environ) if svc.envFromSecret or svc.container.envFrom else {}
        self.line: CommandLine = self._command(expansion.expand_env(self.env_entries, self.env_from), warn=True)
        # The ports the manifest's own probes name in Kubernetes (8000 / 9090 unless it moves them).
        self.k8s_http, self.k8s_system = contract.http_port(svc, graph), contract.system_port(svc, graph)
        self.mounts = {point: path for pvc, path in opts.volumes.items() for point in local.mount_points(svc, pvc)}
        self.mounts.update(config_maps.mounts(svc, opts.config_maps, os.path.join(opts.state_dir, "configmaps")))
        self.ports: dict[int, tuple[int | None, int | None]] = {}
        # A KServe frontend's HTTP-routes port in Kubernetes (gRPC takes the HTTP port; `launch` gives the routes a
        # local port of their own, which the manifest's probes on this port must reach); None: not KServe.
        self.kserve_port = contract.kserve_http_port(svc)
        self.kserve = self.kserve_port is not None
        self.kserve_ports: dict[int, int] = {}
        self.devices: DeviceLedger | None = None  # this machine's GPUs, shared by all plans; None: leave CUDA env alone
        self.http_port = opts.frontend_port  # a frontend's first replica's (`build_plans` moves a second frontend's)
        # A frontend whose every replica serves on the service's socket, which `run` binds and hands down
        # (`listeners.py`), rolls out by surging. Read as the frontend reads its config from what each replica
        # gets (`frontend_env_args`); each replica's launch reads the same again with its own values.
        self.listen: FrontendAddress | None = None  # where its socket listens (the port: `http_port`)
        self.handoff = False
        if self.frontend and runs_frontend_itself(self.line):  # else its args are not the frontend's own
            sock = socket_of(self.line, self.kserve_port, *self.frontend_env_args())
            self.listen, self.handoff = sock.listen, sock.handoff
            self.kserve_port, self.kserve = sock.kserve_port, sock.kserve_port is not None
        self.generation = 1  # the apply that made it (1: the file `run` started with); its replicas say it
        self.restart_id: str | None = None  # the `spec.restart` id its pods carry (`local_restart.py` sets it)

    def frontend_env_args(self) -> tuple[list[str], dict[str, str]]:
        """A frontend's own args and environment as `launch` gives them (less each replica's values)."""
        defaults, pinned = self._pod_env(0, self.http_port, None)
        manifest_env = expansion.expand_env([e for e in self.env_entries if e.name not in pinned],
                                            {**self.env_from, **defaults, **pinned})
        env = {**self.opts.environ, **defaults, **manifest_env, **pinned}
        args = [*self.line.invocations[0].args, *self.opts.append_args.get(self.name, [])]
        return args, {k: v for k, v in env.items() if k not in LISTEN_ENV}

    @property
    def modules(self) -> list[str]:
        return self.line.modules

    def _command(self, env: dict[str, str], warn: bool = False) -> CommandLine:
        """The container's command line after Kubernetes' `$(VAR)` expansion against `env`; with `--engine
        mocker`, its engine workers are the mocker's (`warn`: say which flags that leaves out)."""
        line = parse_command(*contract.expanded_command(self.svc, {**self.env_from, **env}))
        for inv in line.invocations:
            if self.opts.engine == "mocker" and inv.module in engines.ENGINE_PACKAGES:
                module = inv.module
                dropped = engines.as_mocker(inv)
                if warn:
                    log.warning("service %s: %s runs as dynamo.mocker (--engine mocker)%s", self.name, module,
                                f"; engine flags left out: {' '.join(dropped)}" if dropped else "")
        return line

    def check_model(self, paths: bool = False) -> None:
        """Fail before starting anything when a worker's model cannot be found here (`paths`: a model path
        too that does not exist on this machine)."""
        for inv in self._command(expansion.expand_env(self.env_entries, self.env_from)).invocations:
            if inv.module in MODEL_MODULES:
                self._map_volumes(inv)
                try:
                    self._local_model(inv)
                    if paths:
                        local.check_exists(model_of(inv))
                except LookupError as exc:
                    raise ValueError(f"service {self.name}: {exc.args[0]}") from None

    def _ports(self, index: int) -> tuple[int | None, int | None]:
        if index not in self.ports:  # stable across restarts of the same replica
            http = (self.http_port if index == 0 and not self.handoff else free_port()) if self.frontend else None
            system = free_port() if contract.has_system_port(self.svc) else None
            self.ports[index] = (http, system)
        return self.ports[index]

    def move_own_port(self, index: int) -> Launch:
        """Replica `index`'s launch on a fresh port of its own (a frontend on its service's socket whose own port
        another process took while it was down); restarts keep the new one."""
        _, system = self._ports(index)
        self.ports[index] = (free_port(), system)
        return self.launch(index)

    def _argv(self, env: dict[str, str], http: int | None, tmp_dir: str, routes: int | None = None) -> list[str]:
        """The replica's argv, `$(VAR)` expanded against its container `env`; a frontend's `--http-port` is
        `http`, a KServe frontend's HTTP routes `routes`."""
        line = self._command(env)
        line.tokens = [local.map_volumes(t, self.mounts) for t in line.tokens]
        for inv in line.invocations:
            self._map_volumes(inv)
            inv.interpreter = sys.executable  # `python3` in the image is this venv's python here
            if inv.module in MODEL_MODULES:
                self._local_model(inv)
            if inv.module == "dynamo.frontend" and http is not None:
                inv.args = set_flag(inv.args, ("--http-port",), str(http))
                if self.kserve and routes is not None:
                    inv.args = set_flag(inv.args, ("--grpc-metrics-port",), str(routes))
            inv.args = _local_kv_events(inv.args) + self.opts.append_args.get(self.name, [])
        return [local.private_tmp(part, tmp_dir) for part in line.render()]

    def _map_volumes(self, inv: Invocation) -> None:
        """`--volume` mount points in `inv`'s args as their local directories; a worker's model read from one keeps
        the served name the manifest implies (the path it had in the pod)."""
        original = model_of(inv)
        inv.args = [local.map_volumes(a, self.mounts) for a in inv.args]
        keep_served_name(inv, original)

    def _local_model(self, inv) -> None:
        """--model wins; else a model in HF's cache layout resolves in this machine's cache."""
        if self.opts.model:
            swap_model(inv, self.opts.model)
            return
        value = flag_value(inv.args, MODEL_FLAGS[inv.module][0]) if inv.module in MODEL_FLAGS else None
        if value:
            resolved = local.local_model(value, self.opts.environ)  # LookupError: not cached here
            if resolved != value:
                swap_model(inv, resolved)

    def launch(self, index: int) -> Launch:
        http, system = self._ports(index)
        routes = self.kserve_ports.setdefault(index, free_port()) if self.kserve and http else http
        tmp_dir = os.path.join(self.opts.pods_dir or os.path.join(self.opts.state_dir, "pods"), f"{self.name}-{index}")
        shutil.rmtree(tmp_dir, ignore_errors=True)  # a restarted container starts with an empty /tmp
        os.makedirs(tmp_dir)
        env = {k: v for k, v in self.opts.environ.items() if k not in LISTEN_ENV}
        served = self.http_port if self.handoff else http  # where clients reach it: its --http-port, DYNAMO_PORT
        defaults, pinned = self._pod_env(index, served, system)
        env.update(defaults)  # the operator's other entries: the manifest's own env overrides them, as there
        # The manifest's entries for what `run` pins (local ports, discovery) would be overridden below:
        # left out, so a `$(DYN_SYSTEM_PORT)` expands to the port the replica really has.
        manifest_env = expansion.expand_env([e for e in self.env_entries if e.name not in pinned],
                                            {**self.env_from, **defaults, **pinned})
        for key, value in manifest_env.items():
            value = local.private_tmp(local.map_volumes(value, self.mounts), tmp_dir)
            if key in local.HF_ENV and value.startswith("/") and not os.path.exists(value):
                continue  # a cache on a PVC this machine lacks: use the local HF cache instead
            env[key] = value
        env.update(pinned)
        container_env = {**defaults, **manifest_env, **pinned}  # what the kubelet expands command and args against
        env["PYTHONUNBUFFERED"] = "1"
        env["TMPDIR"] = tmp_dir
        # `python3` in shell commands and exec probes is this interpreter, as in the image.
        env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p)
        # The image has the project installed; here the manifest's workingDir maps into this checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_slice(index))
        if "dynamo.vllm" in self.modules:
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(free_port())
        if self.planner:
            env.update(planner_env(self.opts, manifest_env))
        if "dynamo.global_planner" in self.modules:  # it budgets and scales the file's graphs through these
            env["DYN_DEPLOY_CONTROL_URLS"] = json.dumps(self.opts.control_urls)
        probes = contract.default_probes(self.svc, routes or 0, system or 0)
        argv = self._argv(container_env, served, tmp_dir, routes)
        shared = shared_address(self.handoff, argv, env)
        return Launch(argv=argv, env=env,
                      cwd=local_workdir(self.svc.container.workingDir), http_port=routes, system_port=system,
                      probes={k: local.private_tmp_probe(p, tmp_dir) for k, p in probes.items()},
                      shared_port=shared.port if shared else None,
                      listen_host=shared.host if shared else "0.0.0.0")

    def _pod_env(self, index: int, http: int | None, system: int | None) -> tuple[dict[str, str], dict[str, str]]:
        """What the operator and Kubernetes set in the replica's container: (defaults the manifest's env may
        override, as in the operator's merge; what `run` pins to this machine's values: local ports, discovery,
        the pod's identity). A `DYN_NAMESPACE` among the service's `envs` is the manifest's to set."""
        injected = contract.injected_env(self.graph, self.svc, k8s_namespace=self.opts.namespace,
                                         discovery=self.discovery["DYN_DISCOVERY_BACKEND"],
                                         system_port=system or contract.K8S_SYSTEM_PORT,
                                         http_port=http or contract.FRONTEND_PORT)
        pinned = {k: v for k, v in injected.items() if k in _RUN_OWNED}
        pinned.update(self.discovery)
        if "DYN_NAMESPACE" in contract.env_list(self.svc.envs):
            del pinned["DYN_NAMESPACE"]
        pinned["POD_NAME"] = names.k8s_name(self.graph.metadata.name, self.name, str(index))
        pinned["POD_NAMESPACE"] = contract.k8s_namespace_of(self.graph, self.opts.namespace)
        return {k: v for k, v in injected.items() if k not in _RUN_OWNED}, pinned

    def gpu_slice(self, index: int) -> list[str]:
        """`resources.limits.gpu` devices for replica `index` (shared only when every device is taken)."""
        if not self.gpus or self.devices is None:
            return []
        return self.devices.claim((self.graph.metadata.name, self.name, index), self.gpus)

    def release(self, index: int) -> None:
        """Replica `index` is retired (scale-down): its devices are free for the next new one."""
        if self.devices is not None:
            self.devices.release((self.graph.metadata.name, self.name, index))

    def map_probe_port(self, port: int | str, launch: Launch) -> int | None:
        """A probe's Kubernetes port (8000 / 9090 / name, or a KServe frontend's HTTP-routes port) as this
        replica's local port; a KServe frontend's `http_port` is where its HTTP routes listen here."""
        if self.kserve and str(port) == str(self.kserve_port):
            return launch.http_port
        if port in (contract.FRONTEND_PORT, "http") or (self.frontend and port == launch.http_port):
            return launch.http_port
        if self.frontend and str(port) == str(self.k8s_http):  # the manifest moved its HTTP port
            return launch.http_port
        if port in (contract.K8S_SYSTEM_PORT, "system") or (launch.system_port and str(port) == str(self.k8s_system)):
            return launch.system_port
        return int(port) if isinstance(port, int) or str(port).isdigit() else None


def planner_env(opts: RunOptions, manifest_env: dict[str, str]) -> dict[str, str]:
    """What the operator gives a planner, locally: the way to reach the graph it scales (this `run`'s
    control endpoint: the planner maps `environment: kubernetes` to its local connector) and the
    Prometheus scraping the graph, if any. A cluster-internal Prometheus address (the planner's in-cluster
    default, or one in the manifest) cannot resolve here: none is passed, and the planner says so once."""
    prom = opts.prometheus_endpoint
    if prom is None:
        prom = manifest_env.get("PROMETHEUS_ENDPOINT") or opts.environ.get("PROMETHEUS_ENDPOINT") or ""
    host = urlsplit(prom).hostname or ""
    if host.endswith((".svc", ".svc.cluster.local")):
        prom = ""
    return {"DYN_DEPLOY_CONTROL_URL": opts.control_url, "PROMETHEUS_ENDPOINT": prom}


def refuse_multinode(name: str, svc: Service) -> None:
    """One replica spanning several nodes cannot run here, nor a frontend the operator would deploy as a worker
    (`contract.untyped_frontend`): say so before starting anything."""
    if contract.untyped_frontend(svc):
        raise ValueError(f"service {name} {contract.UNTYPED_FRONTEND}")
    nodes = svc.multinode.nodeCount if svc.multinode else 1
    if nodes > 1:
        engine = ", ".join(parse_command(*contract.command_of(svc)[:2]).modules) or "its engine"
        raise ValueError(f"service {name} spans {nodes} nodes per replica (multinode.nodeCount); {engine} cannot "
                         "span processes on this machine. Set multinode.nodeCount to 1 (with the parallelism "
                         "that fits one node) to run it here, or deploy it with `render` / the operator")


def build_plans(graph: Graph, opts: RunOptions, overrides: dict[str, int],
                devices: list[str] | None = None, ledger: DeviceLedger | None = None,
                claim: bool = True, paths: bool = False) -> dict[str, ServicePlan]:
    """One plan per service; `devices` (default: nvidia-smi) are handed out in service order, from `ledger`
    when given (one machine's GPUs shared by the graphs of a file). `claim` off (an apply's plans, which may
    be refused, and are built off the event loop): nothing is claimed now, each replica claims at its launch.
    `paths` (what `run` starts): a worker's model path that does not exist here is refused too."""
    discovery = discovery_env(graph, opts)
    for name, svc in graph.spec.services.items():
        refuse_multinode(name, svc)
        for absent in config_maps.missing(svc, opts.config_maps):
            log.warning("service %s mounts ConfigMap %r, which this file does not define: its mount point is not "
                        "provided here (put the ConfigMap in the file beside the graph)", name, absent)
    engines.check_engines(graph.spec.services, opts.engine)  # before the model lookup: a worker without its engine
    plans = {name: ServicePlan(graph, name, svc, opts, discovery) for name, svc in graph.spec.services.items()}
    _second_frontends(plans)
    known = {pvc for plan in plans.values() for pvc in opts.volumes if local.mount_points(plan.svc, pvc)}
    unknown = sorted(set(opts.volumes) - known)
    if unknown:
        raise ValueError(f"--volume: no service mounts a volume named {unknown[0]!r}")
    for plan in plans.values():
        plan.check_model(paths)  # `paths`: what `run` starts (a plan alone may name the pod's paths)
    for name, count in overrides.items():
        if name not in plans:
            raise ValueError(f"--set: no service {name!r} (have {', '.join(plans)})")
        plans[name].replicas = count
    for name in opts.append_args:
        if name not in plans:
            raise ValueError(f"--append-args: no service {name!r} (have {', '.join(plans)})")
    if ledger is None:
        devices = detect_gpus() if devices is None else devices
        ledger = DeviceLedger(devices) if devices else None
    for plan in plans.values():
        plan.devices = ledger
        for index in range(plan.replicas if claim else 0):  # the graph's own replicas are dealt devices in service order
            plan.gpu_slice(index)
    return plans


def _second_frontends(plans: dict[str, ServicePlan]) -> None:
    """The graph's first frontend serves on --frontend-port; any other frontend service on a port of its own
    (in a cluster each has its own pod and Service), said here and shown in the status table."""
    frontends = [plan for plan in plans.values() if plan.frontend]
    for plan in frontends[1:]:
        plan.http_port = free_port()
        log.warning("service %s is a second frontend: it serves on port %d (--frontend-port %d is %s's)", plan.name,
                    plan.http_port, frontends[0].http_port, frontends[0].name)

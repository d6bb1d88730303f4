"""The Dynamo operator's contract with a service's pods, shared by `run`, `render` and `validate`:
the command it runs when the manifest gives none, the environment it injects, the ports a pod
serves on and the probes it defaults to.

Default command: `python3 -m dynamo.frontend` / `python3 -m dynamo.planner`, the manifest's `args`
(if any) after it. Injected env: `DYN_NAMESPACE` = `{k8s namespace}-{DGD name}`, `DYN_COMPONENT`
(the component type), `DYN_PARENT_DGD_K8S_NAME`, `DYN_PARENT_DGD_K8S_NAMESPACE`, `DYN_DISCOVERY_BACKEND`,
`DYN_SYSTEM_PORT` (+ `DYN_HEALTH_CHECK_ENABLED` on workers), `DYNAMO_PORT` + `DYN_HTTP_PORT` (the
frontend's HTTP port), `POD_NAME` / `POD_NAMESPACE` (downward API). Ports: 8000 / 9090 unless the manifest moves them (`--http-port`, `DYN_HTTP_PORT`,
`DYN_SYSTEM_PORT`). Probes: frontend liveness GET `/health` on the HTTP port and readiness
"`/health` says healthy"; workers liveness `/live`, readiness `/health`, startup `/live` on the
system port.
"""

from __future__ import annotations

from typing import Any

from dynamo.deploy import expansion
from dynamo.deploy.commands import flag_value, parse_command
from dynamo.deploy.model import EnvVar, Graph, Probe, Service

FRONTEND_PORT = 8000
KSERVE_HTTP_PORT = 8788  # Dynamo's --grpc-metrics-port default: a KServe frontend's HTTP routes
K8S_SYSTEM_PORT = 9090
TERMINATION_GRACE_SECONDS = 60
FS_GROUP = 1000
SHARED_MEMORY = "8Gi"

# Readiness of a frontend: /health answers "healthy" (a model with workers, or one whose requests it holds
# for a worker under --wait-for-workers-secs). Python rather
# than curl|jq so it works in our image.
FRONTEND_READY_SCRIPT = (
    "import json,sys,urllib.request as u; "
    "sys.exit(json.load(u.urlopen('http://127.0.0.1:{port}{path}', timeout=5)).get('status') != 'healthy')"
)


# What the operator runs in a component's main container when the manifest gives no
# command: the frontend and the planner have a default; a worker must say what it runs.
DEFAULT_COMMANDS = {"frontend": ["python3", "-m", "dynamo.frontend"], "planner": ["python3", "-m", "dynamo.planner"]}


def command_of(svc: Service) -> tuple[list[str] | None, list[str] | None, bool]:
    """(command, args, defaulted) the main container runs; both None: nothing to run. A frontend or
    planner without a `command` runs the operator's default with the manifest's `args` after it (as a
    container's args follow its image's entrypoint), so `args: [--http-port, "8787"]` alone is enough."""
    main = svc.container
    default = DEFAULT_COMMANDS.get(svc.componentType or "")
    if main.command or not default:
        return main.command, main.args, False
    return list(default), main.args, True


def expanded_command(svc: Service, env: dict[str, str]) -> tuple[list[str] | None, list[str] | None]:
    """The command and args after Kubernetes' `$(VAR)` expansion against `env` (see `expansion`)."""
    command, args, _ = command_of(svc)
    return expansion.expand_all(command, env), expansion.expand_all(args, env)


def env_entries(svc: Service, graph: Graph | None = None) -> list[EnvVar]:
    """The env list the manifest gives the main container, in the order the kubelet reads it: the graph's
    `spec.envs` (when `graph` is given), the service's `envs`, the container's own."""
    return [*((graph.spec.envs or []) if graph else []), *(svc.envs or []), *(svc.container.env or [])]


def dynamo_namespace(graph: Graph, k8s_namespace: str | None = None) -> str:
    return f"{k8s_namespace_of(graph, k8s_namespace)}-{graph.metadata.name}"


def is_frontend(svc: Service) -> bool:
    return svc.componentType == "frontend"


UNTYPED_FRONTEND = ("runs dynamo.frontend but has no componentType: the operator deploys it as a worker (no HTTP "
                    "port or Service, probed on the system port, which a frontend does not serve, so never ready), "
                    "and `run` would not give it --frontend-port; set componentType: frontend")


def untyped_frontend(svc: Service) -> bool:
    """A service that runs `dynamo.frontend` without a component type: the operator goes by componentType
    alone, so to it this is a worker (see UNTYPED_FRONTEND)."""
    if svc.componentType is not None:
        return False
    command, args, _ = command_of(svc)
    return "dynamo.frontend" in parse_command(command, args).modules


def kserve_http_port(svc: Service) -> int | None:
    """A frontend run with Dynamo's KServe gRPC server (`--kserve-grpc-server` or DYN_KSERVE_GRPC_SERVER) serves
    gRPC on its HTTP port and its HTTP routes (/health, /metrics) on `--grpc-metrics-port` (DYN_GRPC_METRICS_PORT,
    8788): that port, for its probes; None for any other service."""
    if not is_frontend(svc):
        return None
    command, args, _ = command_of(svc)
    flags = next((inv.args for inv in parse_command(command, args).invocations if inv.module == "dynamo.frontend"), [])
    env = service_env(svc)
    on = env.get("DYN_KSERVE_GRPC_SERVER", "").strip().lower() in ("1", "true", "yes", "on")
    for flag in flags:  # the last of --kserve-grpc-server / --no-kserve-grpc-server wins, as argparse reads them
        if flag in ("--kserve-grpc-server", "--no-kserve-grpc-server"):
            on = flag == "--kserve-grpc-server"
    if not on:
        return None
    port = flag_value(flags, ("--grpc-metrics-port",)) or env.get("DYN_GRPC_METRICS_PORT") or "8788"
    return int(port) if port.isdigit() else KSERVE_HTTP_PORT


def has_system_port(svc: Service) -> bool:
    return svc.componentType in ("worker", "planner", "main", None) and not is_frontend(svc)


def k8s_namespace_of(graph: Graph, k8s_namespace: str | None = None) -> str:
    return k8s_namespace or graph.metadata.namespace or "default"


def injected_env(graph: Graph, svc: Service, *, k8s_namespace: str | None, discovery: str,
                 system_port: int = K8S_SYSTEM_PORT, http_port: int = FRONTEND_PORT) -> dict[str, str]:
    """The operator's env for the service's main container (ops reference §5.4), `run`'s and `render`'s alike.
    `DYN_SYSTEM_ENABLED` is left out: Dynamo 1.6.1 ignores it (the port alone decides) and warns when it is set."""
    env = {
        "DYN_NAMESPACE": svc.dynamoNamespace or dynamo_namespace(graph, k8s_namespace),
        "DYN_COMPONENT": svc.componentType or "worker",
        "DYN_PARENT_DGD_K8S_NAME": graph.metadata.name,
        "DYN_PARENT_DGD_K8S_NAMESPACE": k8s_namespace_of(graph, k8s_namespace),
        "DYN_DISCOVERY_BACKEND": discovery,
    }
    if is_frontend(svc):
        env["DYNAMO_PORT"] = str(http_port)
        env["DYN_HTTP_PORT"] = str(http_port)
    if has_system_port(svc):
        env["DYN_SYSTEM_PORT"] = str(system_port)
    # Canary health checks on, unless the manifest says: what the operator's v1beta1 code does (older operators
    # wrote "false"), and what catches an engine that hangs.
    if svc.componentType in ("worker", None):
        env["DYN_HEALTH_CHECK_ENABLED"] = "true"
    return env


def env_list(envs: list[EnvVar] | None) -> dict[str, str]:
    """Plain `value` envs as a dict (valueFrom entries are Kubernetes-only)."""
    return {e.name: e.value or "" for e in envs or [] if e.valueFrom is None}


def service_env(svc: Service, graph: Graph | None = None) -> dict[str, str]:
    """The plain-value env the manifest gives the service's main container: the graph's `spec.envs` (when
    `graph` is given), the service's `envs`, then the container's own (a later one wins)."""
    return env_list(env_entries(svc, graph))


def http_port(svc: Service, graph: Graph | None = None) -> int:
    """The port a frontend serves HTTP on in its pod, in its own config's order: `--http-port`, else
    DYN_HTTP_PORT, else DYNAMO_PORT from the manifest's env, else 8000 (a value not known here: 8000)."""
    env = expansion.expand_env(env_entries(svc, graph), {})
    command, args = expanded_command(svc, env)
    flags = next((inv.args for inv in parse_command(command, args).invocations if inv.module == "dynamo.frontend"), [])
    value = flag_value(flags, ("--http-port",)) or env.get("DYN_HTTP_PORT") or env.get("DYNAMO_PORT")
    return _port(value, FRONTEND_PORT)


def system_port(svc: Service, graph: Graph | None = None) -> int:
    """The port a worker's system server (health, metrics) listens on in its pod: the manifest's
    DYN_SYSTEM_PORT, else the operator's 9090."""
    return _port(expansion.expand_env(env_entries(svc, graph), {}).get("DYN_SYSTEM_PORT"), K8S_SYSTEM_PORT)


def pod_port(svc: Service, graph: Graph | None = None) -> int:
    """The port a pod's Service, probes and scrape annotation use: a frontend's HTTP port, else its system port."""
    return http_port(svc, graph) if is_frontend(svc) else system_port(svc, graph)


def _port(value: str | None, default: int) -> int:
    value = (value or "").strip()
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else default


def _http(path: str, port: int | str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}}


def default_probes(svc: Service, http_port: int | str = FRONTEND_PORT,
                   system_port: int | str = K8S_SYSTEM_PORT) -> dict[str, dict[str, Any]]:
    """{liveness,readiness,startup} -> Kubernetes probe dicts, manifest overrides applied. The paths follow the
    service's DYN_HTTP_SVC_*_PATH / DYN_SYSTEM_*_PATH when it moves them (the operator's stay fixed, and fail)."""
    env = service_env(svc)
    if is_frontend(svc):
        health = env.get("DYN_HTTP_SVC_HEALTH_PATH") or "/health"
        probes = {
            "liveness": {**_http(health, http_port), "initialDelaySeconds": 60, "periodSeconds": 60,
                         "timeoutSeconds": 30, "failureThreshold": 10},
            "readiness": {"exec": {"command": ["python3", "-c", FRONTEND_READY_SCRIPT.format(port=http_port,
                                                                                             path=health)]},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 10,
                          "failureThreshold": 3},
        }
    elif has_system_port(svc):
        live, health = env.get("DYN_SYSTEM_LIVE_PATH") or "/live", env.get("DYN_SYSTEM_HEALTH_PATH") or "/health"
        probes = {
            "liveness": {**_http(live, system_port), "periodSeconds": 5, "timeoutSeconds": 30, "failureThreshold": 1},
            "readiness": {**_http(health, system_port), "periodSeconds": 10, "timeoutSeconds": 30,
                          "failureThreshold": 60},
            "startup": {**_http(live, system_port), "periodSeconds": 10, "timeoutSeconds": 5,
                        "failureThreshold": 720},
        }
    else:
        probes = {}
    main = svc.container
    for key, override in (("liveness", svc.livenessProbe), ("readiness", svc.readinessProbe),
                          ("liveness", main.livenessProbe), ("readiness", main.readinessProbe),
                          ("startup", main.startupProbe)):
        if override is not None:  # the container's own probes win, as in the operator's merge
            probes[key] = probe_dict(override)
    return probes


def exec_probes(svc: Service) -> dict[str, dict[str, Any]]:
    """The service's exec probes by kind (the defaults are never exec on a file)."""
    return {k: p for k, p in default_probes(svc).items() if "exec" in p and not _is_default(svc, k, p)}


def _is_default(svc: Service, kind: str, probe: dict[str, Any]) -> bool:
    return is_frontend(svc) and kind == "readiness" and FRONTEND_READY_SCRIPT.split(";")[0] in str(probe)


def probe_dict(probe: Probe) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(probe)


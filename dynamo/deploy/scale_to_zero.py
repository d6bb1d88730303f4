"""`validate`: a service that can be scaled to zero replicas, in a file where nothing holds its requests.

A KEDA ScaledObject scales to zero unless it says otherwise (`minReplicaCount` defaults to 0; `idleReplicaCount:
0` too), an HPA with
`minReplicas: 0` (the HPAScaleToZero feature gate) does too, and so does a planner whose config lets a pool
reach zero (`min_endpoint: 0`, or the prefill/decode minimum). At zero, a frontend without
`--wait-for-workers-secs` answers the model's requests with an error at once (NVIDIA Dynamo's: 404) and counts
no demand, so the autoscaler never sees a reason to bring a worker back: the service stays at zero for good.
A global router's pool is held by its local router's own `--wait-for-workers-secs`. Either, set on a
frontend or a router of the file (flag or `DYN_WAIT_FOR_WORKERS_SECS`), answers the warning.
"""

from __future__ import annotations

from typing import Any

from dynamo.deploy import autoscalers, contract, planner_scaling
from dynamo.deploy.commands import flag_value, parse_command
from dynamo.deploy.model import Graph, Service

HOLDERS = ("dynamo.frontend", "dynamo.router")
WAIT_FLAG = ("--wait-for-workers-secs",)
WAIT_ENV = "DYN_WAIT_FOR_WORKERS_SECS"
MODEL_FLAGS = ("--model-name", "--model-path")
MODEL_ENV = ("DYN_MODEL_NAME", "DYN_MODEL_PATH")


def warnings(docs: list[Any], graphs: list[Graph], maps: dict[str, dict[str, bytes]]) -> list[str]:
    """One warning per service that can reach zero replicas when no frontend or router of the file waits;
    when one waits, one per holding frontend that names no model (it cannot hold a model it never saw)."""
    holders = [(graph, name, svc) for graph in graphs for name, svc in graph.spec.services.items()
               if _holds(graph, svc)]
    to_zero = _to_zero(docs, graphs, maps)
    if holders:
        return _unnamed(holders) if to_zero else []
    out = []
    for (graph, service), by in sorted(to_zero.items()):
        out.append(f"graph {graph}, service {service}: {by} can scale it to zero replicas, but no frontend or "
                   "router of this file holds a request meanwhile: its requests fail at once (404/503) and count "
                   "no demand, so nothing brings a worker back; give the frontend (a global router's pool: its "
                   "local router) --wait-for-workers-secs N (DYN_WAIT_FOR_WORKERS_SECS)")
    return out


def _unnamed(holders: list[tuple[Graph, str, Service]]) -> list[str]:
    """A holding frontend started (or restarted: a node drain, an OOM kill, a rollout) while its workers are at
    zero has seen no model: without --model-name it answers 404 at once and its /health says unhealthy, so
    Kubernetes takes it out of its Service and no demand ever reaches it."""
    out = []
    for graph, name, svc in holders:
        env = contract.service_env(svc, graph)
        for inv in parse_command(*contract.command_of(svc)[:2]).invocations:
            if inv.module == "dynamo.frontend" and not (flag_value(inv.args, MODEL_FLAGS) or
                                                        any(env.get(var) for var in MODEL_ENV)):
                out.append(f"graph {graph.metadata.name}, service {name}: it holds requests while "
                           "workers are at zero, but names no model: started or restarted at zero it knows none, "
                           "answers 404 and reports unhealthy (out of its Service), so nothing scales the "
                           "workers back; give it --model-name (DYN_MODEL_NAME)")
    return out


def _to_zero(docs: list[Any], graphs: list[Graph], maps: dict[str, dict[str, bytes]]) -> dict[tuple[str, str], str]:
    """{(graph, service): what can take it to zero} for the worker services of the file."""
    out: dict[tuple[str, str], str] = {}
    for key, scalers in autoscalers.managed(docs, graphs).items():
        zero = [s.label for s in scalers if _min_replicas(docs[s.document]) == 0]
        if zero and not _is_frontend(graphs, key):
            out[key] = " and ".join(zero)
    for graph in graphs:
        for service, planner in planner_scaling.zero_capable(graph, maps).items():
            out.setdefault((graph.metadata.name, service), f"planner {planner} (min_endpoint 0)")
    return out


def _min_replicas(doc: dict[str, Any]) -> int | None:
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    if doc.get("kind") == autoscalers.KEDA_KIND:
        value = spec.get("minReplicaCount", 0)  # KEDA's default: to zero when no trigger is active
        if spec.get("idleReplicaCount") == 0:  # to zero when idle, whatever the minimum while active
            value = 0
    else:
        value = spec.get("minReplicas", 1)  # the HPA's default
    return value if isinstance(value, int) else None


def _is_frontend(graphs: list[Graph], key: tuple[str, str]) -> bool:
    graph = next((g for g in graphs if g.metadata.name == key[0]), None)
    svc = graph.spec.services.get(key[1]) if graph else None
    return svc is not None and contract.is_frontend(svc)


def _holds(graph: Graph, svc: Service) -> bool:
    """Whether the service runs a frontend or router that holds requests while no worker is there."""
    line = parse_command(*contract.command_of(svc)[:2])
    env = contract.service_env(svc, graph)
    for inv in line.invocations:
        if inv.module in HOLDERS and _positive(flag_value(inv.args, WAIT_FLAG) or env.get(WAIT_ENV)):
            return True
    return False


def _positive(value: str | None) -> bool:
    try:
        return value is not None and float(value) > 0
    except ValueError:
        return False

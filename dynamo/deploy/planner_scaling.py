"""What `render` adds so that a graph's planner scales it with no operator: on Kubernetes the planner
patches a DGD, which a graph rendered to plain objects does not have, so the rendered planner is told
to scale the graph's Deployments instead (`$DYN_PLANNER_DEPLOYMENT_SELECTOR`, read by
`dynamo.planner.connectors.kube_deployments`), each Deployment says which DGD service it is (an
annotation), and the planner's service account may read and scale them (a Role and its binding; told the
graph's scaled objects, `scale_targets`, only those: `resourceNames`, the multi-node pools' LeaderWorkerSets
included).
Also which services a graph's planner scales (`scaled_services`), for `validate` to tell when an
autoscaler of the file would fight it, and which it may take to zero replicas (`zero_capable`)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from dynamo.deploy import config_maps, contract, multinode, names
from dynamo.deploy.commands import flag_value, parse_command
from dynamo.deploy.model import Graph, Service
from dynamo.planner.config import PlannerConfig, convert
from dynamo.planner.connectors.base import resolve_pools

# What the planner's Deployments connector reads: one owner for the label and annotation names.
from dynamo.planner.connectors.kube_deployments import GRAPH_LABEL, NAME_ANNOTATION  # noqa: F401

SELECTOR_ENV = "DYN_PLANNER_DEPLOYMENT_SELECTOR"
CONFIG_ENV = "DYN_PLANNER_CONFIG"  # the planner's `--config`, given as env
# Any Deployment of the namespace: what `rbac_objects` grants when it is not told the graph's scaled objects.
RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"]},
]
SCALE_VERBS = ["get", "patch", "update"]
LWS_GROUP = multinode.LWS_API.split("/")[0]


def scale_targets(graph: Graph, maps: dict[str, dict[str, bytes]] | None = None) -> tuple[list[str], list[str]]:
    """The rendered objects the graph's planners scale, by name: (Deployments, LeaderWorkerSets of the
    multi-node pools)."""
    deployments, groups = [], []
    for service in sorted(scaled_services(graph, maps)):
        name = names.k8s_name(graph.metadata.name, service)
        (groups if multinode.node_count(graph.spec.services[service]) > 1 else deployments).append(name)
    return deployments, groups


def scale_rules(deployments: list[str], groups: list[str]) -> list[dict[str, Any]]:
    """Least privilege for a planner that scales these objects: finding them by label needs `list` (a list
    cannot be limited to names); reading and scaling them is limited to them."""
    rules: list[dict[str, Any]] = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]}]
    if deployments:
        rules += [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": deployments},
                  {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": SCALE_VERBS,
                   "resourceNames": deployments}]
    if groups:
        rules += [{"apiGroups": [LWS_GROUP], "resources": ["leaderworkersets"], "verbs": ["list", "watch"]},
                  {"apiGroups": [LWS_GROUP], "resources": ["leaderworkersets"], "verbs": ["get"],
                   "resourceNames": groups},
                  {"apiGroups": [LWS_GROUP], "resources": ["leaderworkersets/scale"], "verbs": SCALE_VERBS,
                   "resourceNames": groups}]
    return rules


def selector(graph_k8s_name: str) -> str:
    return f"{GRAPH_LABEL}={graph_k8s_name}"


def account_name(graph_k8s_name: str) -> str:
    return f"{graph_k8s_name}-planner"


def rbac_objects(graph_k8s_name: str, namespace: str | None, labels: dict[str, str], accounts: list[str],
                 targets: tuple[list[str], list[str]] | None = None) -> list[dict[str, Any]]:
    """The Role that reads and scales the graph's Deployments, bound to the planner pods' service
    accounts; the planner's own account where a planner pod uses it (none named, no discovery account).
    `targets` (`scale_targets`): only those objects may be read and scaled (else any Deployment). The
    accounts should be the planner's alone: every pod running as one of them may scale the graph."""
    name = account_name(graph_k8s_name)
    meta = {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}
    subjects = [{"kind": "ServiceAccount", "name": account, **({"namespace": namespace} if namespace else {})}
                for account in dict.fromkeys(accounts)]
    objects: list[dict[str, Any]] = []
    if name in accounts:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)})
    return objects + [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
         "rules": RULES if targets is None else scale_rules(*targets)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": subjects},
    ]


def scaled_services(graph: Graph, maps: dict[str, dict[str, bytes]] | None = None) -> dict[str, str]:
    """{service: the planner service that scales it} for the graph's planners, found as the planner finds its
    pools (`resolve_pools`: configured names, else `subComponentType`, else names) from the config its command
    line gives (`--config` inline, or a file a ConfigMap of the same file mounts). A config that cannot be read
    here: the typed pools (prefill / decode), else every worker. An advisory or `virtual` planner scales none."""
    out: dict[str, str] = {}
    for name, cfg in _planners(graph, maps):
        for pool in _pools(graph, cfg):
            out.setdefault(pool, name)
    return out


def zero_capable(graph: Graph, maps: dict[str, dict[str, bytes]] | None = None) -> dict[str, str]:
    """{service: planner service} for the pools a planner of the graph may scale to zero replicas (its config's
    minimum for the pool's role is 0); only configs readable from the file count."""
    out: dict[str, str] = {}
    for name, cfg in _planners(graph, maps):
        if cfg is None or not _applies(cfg):
            continue
        try:
            pools = resolve_pools(_specs(graph), cfg)
        except ValueError:
            continue
        for role, pool in pools.items():
            if cfg.min_for(role) == 0:
                out.setdefault(pool, name)
    return out


def _planners(graph: Graph, maps: dict[str, dict[str, bytes]] | None) -> list[tuple[str, PlannerConfig | None]]:
    """The graph's SLA planner services with their configs as their processes would read them (None: not
    readable from the file). A GlobalPlanner is a planner component too, but scales other graphs through
    their own planners."""
    out = []
    for name, svc in graph.spec.services.items():
        modules = parse_command(*contract.command_of(svc)[:2]).modules
        if svc.componentType == "planner" and ("dynamo.planner" in modules or not modules):
            out.append((name, _config(svc, maps or {})))
    return out


def _applies(cfg: PlannerConfig) -> bool:
    """Whether the planner applies its decisions (an advisory or `virtual` one logs or hands them on)."""
    return not (cfg.advisory or cfg.environment == "virtual")


def _specs(graph: Graph) -> dict[str, dict]:
    return {n: {"componentType": s.componentType, "subComponentType": s.subComponentType}
            for n, s in graph.spec.services.items()}


def _pools(graph: Graph, cfg: PlannerConfig | None) -> list[str]:
    services = graph.spec.services
    if cfg is not None:
        if not _applies(cfg):
            return []
        try:
            return sorted(set(resolve_pools(_specs(graph), cfg).values()))
        except ValueError:  # the planner itself would not start; guess as below
            pass
    typed = [n for n, s in services.items() if s.subComponentType in ("prefill", "decode")]
    return typed or [n for n, s in services.items() if (s.componentType or "worker") == "worker"]


def _config(planner: Service, maps: dict[str, dict[str, bytes]]) -> PlannerConfig | None:
    """The planner's config as its process would read it; None when it cannot be read from the file."""
    text = _config_text(planner, maps)
    if text is None:
        return None
    try:
        raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        return convert(raw) if isinstance(raw, dict) else None  # the planner's own reading: Dynamo's keys too
    except (ValueError, yaml.YAMLError):  # JSONDecodeError is a ValueError
        return None


def _config_text(planner: Service, maps: dict[str, dict[str, bytes]]) -> str | None:
    line = parse_command(*contract.command_of(planner)[:2])
    given = next((flag_value(inv.args, ("--config",)) for inv in line.invocations if inv.module == "dynamo.planner"),
                 None) or contract.service_env(planner).get(CONFIG_ENV)
    if not given or given.lstrip().startswith("{"):
        return given
    found = config_maps.content(planner, maps, given)
    return found.decode() if found is not None else None

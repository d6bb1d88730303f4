"""Day-2 settings of a rendered graph: how an edit rolls out. The Deployment strategy Dynamo's operator
reads from a component's annotations, the restart id `spec.restart` stamps on every pod template (so
changing it re-rolls the graph), and the checksum of the graph's ConfigMap (so editing it rolls the pods
that read it). `check` is the `validate` side: a bad value is an error naming its path."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterator

from dynamo.deploy.model import Graph, Service

# The operator's names (deploy/operator internal/controller: KubeAnnotationDeploymentStrategy and the two
# KubeAnnotationDeploymentRollingUpdate* constants), read from a component's annotations.
STRATEGY = "nvidia.com/deployment-strategy"
MAX_SURGE = "nvidia.com/deployment-rolling-update-max-surge"
MAX_UNAVAILABLE = "nvidia.com/deployment-rolling-update-max-unavailable"
STRATEGIES = ("RollingUpdate", "Recreate")
# The operator's RestartAnnotation: it stamps this on pod templates to restart them.
RESTART_ANNOTATION = "nvidia.com/restartAt"
# Ours: the sha256 of the graph's `{dgd}-env` ConfigMap data, so that editing it changes every pod template.
CONFIG_CHECKSUM = "nvidia.com/config-checksum"
_INT_OR_PERCENT = re.compile(r"^(0|[1-9][0-9]*)%?$")
_KEYS = (STRATEGY, MAX_SURGE, MAX_UNAVAILABLE)


def annotation(svc: Service, graph: Graph, key: str) -> str | None:
    """A component's annotation (pod metadata, then the service's), else the graph's (v1beta1's
    `spec.annotations` apply to every component; they are folded into the graph's annotations)."""
    value = svc.annotation(key)
    return value if value is not None else (graph.metadata.annotations or {}).get(key)


def _int_or_string(value: str) -> int | str:
    return value if value.endswith("%") else int(value)


def strategy(svc: Service, graph: Graph) -> dict[str, Any] | None:
    """The Deployment's `spec.strategy` from the annotations, as the operator sets it; None when none is
    given (Kubernetes' default, RollingUpdate 25%/25%, is the operator's too). `check` refused bad values."""
    kind, surge, unavailable = (annotation(svc, graph, k) for k in _KEYS)
    if kind == "Recreate":
        return {"type": "Recreate"}
    if kind is None and surge is None and unavailable is None:
        return None
    rolling = {}
    for field, value in (("maxSurge", surge), ("maxUnavailable", unavailable)):
        if value is not None:
            rolling[field] = _int_or_string(value)
    return {"type": "RollingUpdate", **({"rollingUpdate": rolling} if rolling else {})}


def pod_annotations(graph: Graph, config_data: dict[str, str] | None) -> dict[str, str]:
    """The restart id and the ConfigMap's checksum, for every pod template of the graph."""
    out = {}
    if config_data is not None:
        out[CONFIG_CHECKSUM] = checksum(config_data)
    if graph.spec.restart is not None:
        out[RESTART_ANNOTATION] = graph.spec.restart.id
    return out


def checksum(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def restart_warnings(graph: Graph) -> list[str]:
    """The operator restarts `Sequential`ly unless told `Parallel` (its CRD's default; with no `order`, the
    services in alphabetical order, as its GetRestartOrder): plain Deployments cannot wait for one another.
    (`run`'s apply can, and does: `local_restart.py`.)"""
    restart = graph.spec.restart
    if restart is None:
        return []
    kind = (restart.strategy.type if restart.strategy is not None else None) or "Sequential"
    if kind != "Sequential":
        return []
    return ["spec.restart.strategy: Sequential (the operator's default) is rendered as a parallel restart (every "
            "Deployment rolls when the id changes; plain Deployments cannot wait for one another)"]


# ----- validate ----------------------------------------------------------------------------------

def _sources(where: str, svc: Service, beta: bool) -> Iterator[tuple[str, dict[str, str]]]:
    meta = svc.extraPodMetadata
    pod_path = f"{where}.podTemplate.metadata.annotations" if beta else f"{where}.extraPodMetadata.annotations"
    if meta is not None and meta.annotations:
        yield pod_path, meta.annotations
    if svc.annotations:
        yield f"{where}.annotations", svc.annotations


def _value_errors(path: str, key: str, value: str) -> list[str]:
    if key == STRATEGY and value not in STRATEGIES:
        return [f"{path}.{key}: expected one of {', '.join(STRATEGIES)}, got {value!r}"]
    if key != STRATEGY and not _INT_OR_PERCENT.match(value):
        return [f"{path}.{key}: expected a whole number or a percentage (\"1\", \"25%\"), got {value!r}"]
    return []


def check_service(name: str, where: str, svc: Service, graph: Graph, beta: bool) -> tuple[list[str], list[str]]:
    """Errors and warnings about one component's rollout annotations."""
    errors: list[str] = []
    for path, given in _sources(where, svc, beta):
        for key in _KEYS:
            if key in given:
                errors += _value_errors(path, key, str(given[key]))
    if errors:
        return errors, []
    kind, surge, unavailable = (annotation(svc, graph, k) for k in _KEYS)
    if kind != "Recreate" and surge is not None and unavailable is not None and _zero(surge) and _zero(unavailable):
        return [f"{where}: {MAX_SURGE} and {MAX_UNAVAILABLE} are both 0 (the rollout could never progress)"], []
    warnings = []
    if kind == "Recreate" and (surge is not None or unavailable is not None):
        warnings.append(f"{where}: service {name}: Recreate ignores the rolling-update max-surge/max-unavailable")
    if (kind or surge or unavailable) and svc.multinode is not None and svc.multinode.nodeCount > 1:
        warnings.append(f"{where}: service {name}: the rollout annotations are not rendered for a multinode "
                        "LeaderWorkerSet (it keeps its own rolling update)")
    return [], warnings


def _zero(value: str) -> bool:
    return value.rstrip("%") == "0"


def check_graph(graph: Graph, beta: bool) -> list[str]:
    """The graph-wide rollout annotations (v1beta1: `spec.annotations`, folded into the graph's)."""
    given = graph.metadata.annotations or {}
    path = "spec.annotations" if beta else "metadata.annotations"
    return [e for key in _KEYS if key in given for e in _value_errors(path, key, str(given[key]))]


def check_restart(graph: Graph, beta: bool) -> list[str]:
    """`spec.restart.strategy.order`, as the operator's webhook checks it (validateRestartStrategyOrder): none
    with `Parallel`; else, when given, every service (component) of the graph exactly once."""
    restart = graph.spec.restart
    strategy = restart.strategy if restart is not None else None
    order = (strategy.order if strategy is not None else None) or []
    if not order:
        return []
    path, noun = "spec.restart.strategy.order", "component" if beta else "service"
    if strategy is not None and strategy.type == "Parallel":
        return [f"{path}: not allowed with strategy Parallel (every {noun} restarts at once)"]
    errors = [f"{path}[{i}]: {name!r} is not a {noun} of the graph"
              for i, name in enumerate(order) if name not in graph.spec.services]
    twice = sorted({name for name in order if order.count(name) > 1})
    if twice:
        errors.append(f"{path}: {', '.join(twice)} listed more than once (each {noun} exactly once)")
    missing = [name for name in graph.spec.services if name not in order]
    if missing:
        errors.append(f"{path}: {', '.join(missing)} not listed (it lists every {noun} of the graph, or is left out)")
    return errors

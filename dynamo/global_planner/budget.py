"""GPUs a graph's workers hold, read from its DGD (v1alpha1 `spec.services` or v1beta1 `spec.components`):
replicas × GPUs per replica (`resources.limits.gpu`, else `requests.gpu`, else the main container's
`nvidia.com/gpu`) × nodes per replica for multinode workers. Frontends and planners hold none."""

from __future__ import annotations

from typing import Any

from dynamo.planner.connectors.base import NOT_WORKERS
from dynamo.planner.connectors.kubernetes import components


def role_of(comp: dict[str, Any]) -> str:
    """prefill / decode / worker / frontend / planner ..."""
    return str(comp.get("subComponentType") or comp.get("type") or comp.get("componentType") or "worker")


def _count(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def gpus_per_replica(comp: dict[str, Any]) -> int:
    res = comp.get("resources") or {}
    gpus = _count((res.get("limits") or {}).get("gpu")) or _count((res.get("requests") or {}).get("gpu"))
    if not gpus:
        pod = (comp.get("podTemplate") or {}).get("spec") or {}
        containers = pod.get("containers") or [((comp.get("extraPodSpec") or {}).get("mainContainer") or {})]
        for c in containers:
            limits = ((c or {}).get("resources") or {}).get("limits") or {}
            gpus = max(gpus, _count(limits.get("nvidia.com/gpu")))
    nodes = _count(((comp.get("multinode") or {}).get("nodeCount"))) or 1
    return gpus * nodes


def worker_gpus(dgd: dict[str, Any], replicas: dict[str, int] | None = None) -> int:
    """GPUs of the graph's workers, with `replicas` (component name -> count) in place of the DGD's."""
    total = 0
    for name, comp in components(dgd).items():
        if role_of(comp) in NOT_WORKERS:
            continue
        count = (replicas or {}).get(name, comp.get("replicas", 1))
        total += _count(count) * gpus_per_replica(comp)
    return total


def target_component(dgd: dict[str, Any], sub_component_type: str, name: str | None) -> str:
    """The component a target names, else the one of that role; ValueError otherwise."""
    comps = components(dgd)
    if name:
        if name not in comps:
            raise ValueError(f"no component {name!r} in DGD {dgd.get('metadata', {}).get('name')!r}")
        return name
    found = [n for n, c in comps.items() if role_of(c) == sub_component_type]
    if len(found) != 1:
        raise ValueError(f"cannot tell which component is the {sub_component_type} pool among {sorted(comps)}")
    return found[0]

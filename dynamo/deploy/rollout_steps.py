"""The pure half of an apply (`local_rollout.py` drives the replicas): a service's Deployment strategy resolved
against a replica count, one step of the Deployment controller, what an apply does to a service (`Change`), the
fingerprint that tells a changed pod template from a new count (the restart id aside: `local_restart.py`), and
the graph-wide changes that cannot be made in place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import msgspec

from dynamo.deploy import config_maps, contract, rollout
from dynamo.deploy.frontend_socket import planned_address
from dynamo.deploy.model import Graph
from dynamo.deploy.plan import ServicePlan

DEFAULT_SURGE = DEFAULT_UNAVAILABLE = "25%"  # Kubernetes' RollingUpdate defaults (the operator's too)


class ApplyRequest(msgspec.Struct, forbid_unknown_fields=True):
    manifest: str  # the file `run` takes, as text
    deadline_s: Annotated[float, msgspec.Meta(gt=0)] | None = None  # progressDeadlineSeconds of its rollouts
    source: str | None = None  # the file it was read from (`apply FILE`): what its errors name


class Refused(ValueError):
    """A change that cannot be applied in place: `field` names it (409; nothing is changed)."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


class Halted(RuntimeError):
    """The run is shutting down: an apply is not taken (503)."""


@dataclass(frozen=True)
class Strategy:
    kind: str  # RollingUpdate | Recreate
    max_surge: int = 0
    max_unavailable: int = 0
    note: str = ""


@dataclass
class Change:
    """What an apply does to one service, decided before anything is changed."""

    kind: str  # added | unchanged | scaled | replaced
    plan: ServicePlan  # the service's plan once applied
    replicas: int
    previous: ServicePlan | None = None  # replaced: what most of its replicas run now
    strategy: Strategy | None = None
    respec: bool = False  # replaced for a changed pod template (not a restart); a stall rolled on keeps its own


def scaled_value(value: int | str | None, replicas: int, default: str, round_up: bool) -> int:
    """An intOrString of a RollingUpdate as Kubernetes resolves it against `replicas`: percentages of
    maxSurge rounded up, of maxUnavailable down."""
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * replicas / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def strategy_for(plan: ServicePlan, replicas: int, previous: ServicePlan | None = None) -> Strategy:
    """`plan`'s strategy against `replicas`, rolling out over replicas of `previous`. A frontend surges only
    where old and new replicas alike serve on the socket `run` holds for the service (`listeners.py`); one that
    binds its fixed port itself, or replaces one that does, cannot have a second copy beside the first; one whose
    socket moves (another --http-host) cannot bind the new one while the old replicas hold the old."""
    if plan.frontend and (planned_address(plan) is None
                          or (previous is not None and planned_address(previous) is None)):
        return Strategy("Recreate", note=f"{plan.name} listens on a fixed port a second copy cannot bind: "
                                         "recreated (stopped, then started), not surged")
    if plan.frontend and previous is not None and planned_address(plan) != planned_address(previous):
        moved = planned_address(plan)
        return Strategy("Recreate", note=f"{plan.name} moves its socket to {moved.host if moved else '?'}, which "
                                         "the old one's may overlap: recreated (stopped, then started), not surged")
    given = rollout.strategy(plan.svc, plan.graph) or {"type": "RollingUpdate"}
    if given["type"] == "Recreate":
        return Strategy("Recreate")
    rolling = given.get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge"), replicas, DEFAULT_SURGE, True)
    unavailable = scaled_value(rolling.get("maxUnavailable"), replicas, DEFAULT_UNAVAILABLE, False)
    if surge == 0 and unavailable == 0:  # Kubernetes' rule: the rollout must be able to progress
        unavailable = 1
    return Strategy("RollingUpdate", surge, unavailable)


def step(target: int, strat: Strategy, old: int, old_ready: int, new: int, new_ready: int) -> tuple[int, int]:
    """(new replicas to start, old replicas to retire) now, as the Deployment controller scales its new and
    old ReplicaSets: at most target+maxSurge replicas; old ones retired only while target-maxUnavailable
    stay ready (unready old ones first: retiring them costs nothing)."""
    start = max(0, min(target + strat.max_surge - (old + new), target - new))
    min_available = target - strat.max_unavailable
    if old + new - min_available - (new - new_ready) <= 0:  # the controller's maxScaledDown
        return start, 0
    unready = min(old - old_ready, old + new - min_available - (new - new_ready))
    healthy = max(0, min(old_ready, old_ready + new_ready - min_available))
    return start, min(old, unready + healthy)


def fingerprint(plan: ServicePlan) -> bytes:
    """What a pod template holds of a service: its spec without the replica count, the graph's env, the
    checksum of the ConfigMaps it mounts, the flags `--append-args` adds. Not the restart id: which id a
    service's pods carry, and when a new one reaches them, is `local_restart.py`'s (a Sequential restart
    stamps it on one service at a time)."""
    svc = msgspec.structs.replace(plan.svc, replicas=None)
    # Only what its mounts show: a ConfigMap of the file that it does not mount changes nothing of its pods.
    maps = sorted((mount["mountPath"], name, rollout.checksum({k: v.hex() for k, v in files.items()}))
                  for mount, _, name, files in config_maps.mounted(plan.svc, plan.opts.config_maps))
    return msgspec.json.encode([svc, plan.graph.spec.envs, maps,
                                plan.opts.append_args.get(plan.name, []), plan.opts.engine, plan.opts.model])


def refusal(old: Graph, new: Graph, old_plans: dict[str, ServicePlan], new_plans: dict[str, ServicePlan],
            k8s_namespace: str | None) -> Refused | None:
    """The first graph-wide change that `apply` cannot make in place, else None."""
    if new.metadata.name != old.metadata.name:
        return Refused("metadata.name", f"the graph is {old.metadata.name!r}; a new name is a new graph "
                       "(stop this run and run the file)")
    ns_old, ns_new = (contract.k8s_namespace_of(g, k8s_namespace) for g in (old, new))
    if ns_old != ns_new:
        return Refused("metadata.namespace", f"{ns_old!r} -> {ns_new!r} changes the graph's Dynamo namespace, "
                       "which every replica registers in")
    for name in set(old_plans) & set(new_plans):
        if old_plans[name].svc.dynamoNamespace != new_plans[name].svc.dynamoNamespace:
            return Refused(f"spec.services.{name}.dynamoNamespace", "the Dynamo namespace cannot change in place")
    a, b = next(iter(old_plans.values()), None), next(iter(new_plans.values()), None)
    if a is not None and b is not None and a.discovery != b.discovery:
        before, after = (p.discovery.get("ETCD_ENDPOINTS") or p.discovery["DYN_DISCOVERY_BACKEND"] for p in (a, b))
        return Refused("spec.envs ETCD_ENDPOINTS", "the discovery the whole graph shares cannot change in place "
                       f"({before} -> {after})")
    return None



"""The connector interface: read each pool's desired and ready replicas, ask for new
desired counts. Connectors only issue changes; waiting for readiness (with a deadline)
is the planner's, the same for every connector.

Registry: `environment` name -> "module:Class", imported lazily (the Kubernetes client
is only needed by the `kubernetes` connector).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from dynamo.planner.config import PlannerConfig


@dataclass
class PoolState:
    desired: int
    ready: int


class Connector(ABC):
    name = "base"

    def __init__(self, cfg: PlannerConfig) -> None:
        self.cfg = cfg

    async def start(self) -> None:  # noqa: B027 - optional: a connector with nothing to connect keeps it
        """Connect and resolve which component is which pool; raise if impossible."""

    @abstractmethod
    async def state(self) -> dict[str, PoolState]:
        """{role: PoolState} for the roles the planner scales."""

    @abstractmethod
    async def scale(self, targets: dict[str, int]) -> None:
        """Set the desired replicas of each role in `targets` (returns once requested)."""

    async def close(self) -> None:  # noqa: B027 - optional: a connector holding nothing keeps it
        pass


_CONNECTORS = {
    "local": "dynamo.planner.connectors.local:LocalConnector",
    "kubernetes": "dynamo.planner.connectors.kubernetes:for_config",
    "virtual": "dynamo.planner.connectors.virtual:VirtualConnector",
    "global-planner": "dynamo.planner.connectors.global_planner:GlobalPlannerConnector",
}


def connector_problem(environment: str) -> str | None:
    """Why a planner in `environment` could not start, or None."""
    if environment in _CONNECTORS:
        return None
    return f"environment {environment!r} has no connector here; choose from {sorted(_CONNECTORS)}"


def register_connector(environment: str, target: str) -> None:
    _CONNECTORS[environment] = target


def make_connector(cfg: PlannerConfig, **options) -> Connector:
    problem = connector_problem(cfg.environment)
    if problem:
        raise ValueError(problem)
    target = _CONNECTORS[cfg.environment]
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(cfg, **options)


def find_component(names: list[str], role: str, mode: str, explicit: str | None) -> str:
    """The service serving `role`: the configured name, else by name (Prefill/Decode), else the
    only worker service (agg). Raises ValueError naming the candidates."""
    if explicit:
        if explicit not in names:
            raise ValueError(f"no component {explicit!r}; have {names}")
        return explicit
    workers = [n for n in names if not any(k in n.lower() for k in ("frontend", "planner", "router"))]
    if mode == "agg":
        matches = workers if len(workers) == 1 else [n for n in workers if "decode" in n.lower()]
    else:
        matches = [n for n in workers if role in n.lower()]
    if len(matches) != 1:
        raise ValueError(f"cannot tell which component is the {role} pool among {names}; "
                         f"set {role}_component in the planner config")
    return matches[0]


NOT_WORKERS = ("frontend", "planner", "epp")


def resolve_pools(specs: dict[str, dict], cfg: PlannerConfig) -> dict[str, str]:
    """{role: component name} for the roles `cfg` scales, as Dynamo's planner finds them: the
    configured name, else the one component whose `subComponentType` (v1alpha1) or `type` (v1beta1)
    is the role, else by name among the worker components. `specs`: name -> the component's spec
    (only its type fields are read)."""
    workers = sorted(n for n, c in specs.items()
                     if (c.get("componentType") or c.get("type") or "worker") not in NOT_WORKERS)
    out = {}
    for role in cfg.roles:
        explicit = cfg.prefill_component if role == "prefill" else cfg.decode_component
        typed = [n for n in workers if role in (specs[n].get("subComponentType"), specs[n].get("type"))]
        if not explicit and len(typed) == 1:
            explicit = typed[0]
        out[role] = find_component(workers if not explicit else sorted(specs), role, cfg.mode, explicit)
    return out

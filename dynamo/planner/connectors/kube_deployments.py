"""Kubernetes without Dynamo's operator: a graph `python -m dynamo.deploy render` turned into plain
Deployments has no DGD to patch, so the planner scales the Deployments themselves.

- pools: the Deployments matching `kube_deployment_selector` (render sets
  `nvidia.com/dynamo-graph-deployment-name=<graph>` in `$DYN_PLANNER_DEPLOYMENT_SELECTOR`), each read as
  its DGD service: the name from the annotation `nvidia.com/dynamo-component-name` (else the label
  `nvidia.com/dynamo-component`), the role from the labels `nvidia.com/dynamo-component-type` and
  `nvidia.com/dynamo-sub-component-type`; pools are then found as for a DGD;
- state: `spec.replicas` is desired, `status.readyReplicas` (at most desired) is ready;
- scale: PATCH the `apps/v1` scale subresource of the Deployment.

RBAC: `get`/`list` on deployments and `get`/`patch` on deployments/scale, which render grants the
planner's service account.
"""

from __future__ import annotations

import asyncio
import logging

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState, resolve_pools
from dynamo.planner.connectors.kubernetes import make_api_client

log = logging.getLogger(__name__)

NAME_ANNOTATION = "nvidia.com/dynamo-component-name"
COMPONENT_LABEL = "nvidia.com/dynamo-component"
TYPE_LABEL = "nvidia.com/dynamo-component-type"
SUB_TYPE_LABEL = "nvidia.com/dynamo-sub-component-type"
GRAPH_LABEL = "nvidia.com/dynamo-graph-deployment-name"


def as_services(deployments) -> dict[str, dict]:
    """Rendered Deployments (the client's objects) as the DGD services they render, in v1alpha1's shape:
    name, componentType/subComponentType, replicas, GPUs per replica (`resources.limits.gpu`), and the
    Deployment's own name."""
    out = {}
    for dep in deployments:
        meta = dep.metadata
        labels, notes = meta.labels or {}, meta.annotations or {}
        name = notes.get(NAME_ANNOTATION) or labels.get(COMPONENT_LABEL) or meta.name
        containers = dep.spec.template.spec.containers if dep.spec.template and dep.spec.template.spec else []
        gpus = max((int(((c.resources.limits if c.resources else None) or {}).get("nvidia.com/gpu", 0) or 0)
                    for c in containers or []), default=0)
        out[name] = {"componentType": labels.get(TYPE_LABEL, "worker"), "subComponentType": labels.get(SUB_TYPE_LABEL),
                     "replicas": dep.spec.replicas if dep.spec.replicas is not None else 1,
                     "resources": {"limits": {"gpu": str(gpus)}}, "deployment": meta.name}
    return out


class DeploymentsConnector(Connector):
    name = "kubernetes-deployments"

    def __init__(self, cfg: PlannerConfig, api_client=None) -> None:
        super().__init__(cfg)
        from kubernetes import client  # the `planner` extra

        self.apps = client.AppsV1Api(api_client or make_api_client(cfg))
        self.k8s_ns = cfg.kube_namespace or "default"
        self.selector = cfg.kube_deployment_selector or ""
        self.deployments: dict[str, str] = {}  # role -> Deployment name
        self.components: dict[str, str] = {}  # role -> the DGD service it renders

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def start(self) -> None:
        found = await self._call(self.apps.list_namespaced_deployment, self.k8s_ns, label_selector=self.selector)
        services = as_services(found.items)
        if not services:
            raise ValueError(f"no Deployments in namespace {self.k8s_ns!r} match {self.selector!r}")
        self.components = resolve_pools(services, self.cfg)
        self.deployments = {role: services[name]["deployment"] for role, name in self.components.items()}
        log.info("kubernetes connector (Deployments, no operator): %s/%s, pools %s", self.k8s_ns, self.selector,
                 self.deployments)

    async def state(self) -> dict[str, PoolState]:
        out = {}
        for role, name in self.deployments.items():
            dep = await self._call(self.apps.read_namespaced_deployment, name, self.k8s_ns)
            desired = int(dep.spec.replicas if dep.spec.replicas is not None else 1)
            ready = int((dep.status.ready_replicas if dep.status else None) or 0)
            out[role] = PoolState(desired, min(desired, ready))
        return out

    async def scale(self, targets: dict[str, int]) -> None:
        for role, n in targets.items():
            await self._call(self.apps.patch_namespaced_deployment_scale, self.deployments[role], self.k8s_ns,
                             {"spec": {"replicas": int(n)}})

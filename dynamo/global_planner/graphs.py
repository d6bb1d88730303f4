"""The graphs a GlobalPlanner manages, read from Kubernetes in the DGD (v1alpha1) shape `budget.py` reads:
DynamoGraphDeployments (Dynamo's operator), or graphs `python -m dynamo.deploy render` turned into plain
Deployments (no operator: each annotated with the DGD service it renders and labelled with its graph),
marked `rendered: true`. A rendered graph is one with no DGD of its name (an operator's Deployments carry
the graph label too, but no service annotation)."""

from __future__ import annotations

import asyncio
from typing import Any

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector
from dynamo.planner.connectors.kube_deployments import GRAPH_LABEL, NAME_ANNOTATION, DeploymentsConnector, as_services
from dynamo.planner.connectors.kubernetes import KubernetesConnector, dgd_call

# Without the operator the DGD kind is not served (404), and a rendered graph's Role grants no access to
# it (403): either way there are no DGDs to read, only rendered Deployments.
NO_DGD = (403, 404)


class Graphs:
    def __init__(self, api_client) -> None:
        from kubernetes import client  # the `planner` extra

        self.api_client = api_client
        self.api = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self._errors = client.ApiException

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The graph `name`: its DGD, else its rendered Deployments; LookupError when neither exists."""
        try:
            return await self._either_version(self.api.get_namespaced_custom_object, namespace, name)
        except self._errors as exc:
            if exc.status not in NO_DGD:
                raise
        rendered = await self._rendered(namespace, f"{GRAPH_LABEL}={name}")
        if name not in rendered:
            raise LookupError(f"no DynamoGraphDeployment {namespace}/{name}, nor Deployments rendered from one")
        return rendered[name]

    async def all(self, namespace: str) -> list[dict[str, Any]]:
        try:
            found = await self._either_version(self.api.list_namespaced_custom_object, namespace)
            dgds = list(found.get("items") or [])
        except self._errors as exc:
            if exc.status not in NO_DGD:
                raise
            dgds = []  # no DGD kind served here (no operator), or none this account may read
        names = {(d.get("metadata") or {}).get("name") for d in dgds}
        rendered = await self._rendered(namespace, GRAPH_LABEL)
        return dgds + [g for name, g in rendered.items() if name not in names]

    async def managed(self, namespace: str, names: set[str] | None) -> list[dict[str, Any]]:
        """Every graph in `namespace`, or those of `names`."""
        if names is None:
            return await self.all(namespace)
        out = []
        for name in sorted(names):
            try:
                out.append(await self.get(namespace, name))
            except LookupError:
                pass
        return out

    def connector(self, cfg: PlannerConfig, graph: dict[str, Any]) -> Connector:
        """What scales `graph`: a rendered graph's Deployments, else its DGD."""
        if graph.get("rendered"):
            return DeploymentsConnector(cfg, api_client=self.api_client)
        return KubernetesConnector(cfg, api_client=self.api_client)

    async def _rendered(self, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
        found = await asyncio.to_thread(self.apps.list_namespaced_deployment, namespace, label_selector=selector)
        by_graph: dict[str, list] = {}
        for dep in found.items:  # grouped first: two graphs may both have a `VllmDecodeWorker`
            if NAME_ANNOTATION in (dep.metadata.annotations or {}):
                by_graph.setdefault((dep.metadata.labels or {}).get(GRAPH_LABEL, ""), []).append(dep)
        return {name: {"metadata": {"name": name, "namespace": namespace}, "rendered": True,
                       "spec": {"services": as_services(deps)}} for name, deps in by_graph.items()}

    async def _either_version(self, call, namespace: str, *name: str):
        return (await dgd_call(call, self._errors, namespace, *name))[1]

"""Kubernetes connector, with the official `kubernetes` client (Dynamo 1.6.1
`connectors/clients/kubernetes_api.py`):

- scale: PATCH the scale subresource of the DGD scaling adapter (DGDSA)
  `{dgd}-{component.lower()}` (`nvidia.com/v1alpha1`, plural
  `dynamographdeploymentscalingadapters`) with `{"spec": {"replicas": N}}`;
- on 404 (no adapter): a JSON Patch on the DGD itself, guarded by a `test` op on the
  component's name so a reordered list is never patched blindly
  (v1beta1 `spec.components[i]`, v1alpha1 `spec.services.<name>`);
- readiness: the DGD's condition `Ready=True`.

The DGD is read as `nvidia.com/v1beta1` and, if the server has no such version, as
`v1alpha1`. Client configuration: in-cluster, else `kubeconfig` (`$KUBECONFIG`), else ~/.kube/config. The
client is synchronous; calls run in a worker thread so the planner loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState, resolve_pools

log = logging.getLogger(__name__)

GROUP = "nvidia.com"
DGD_PLURAL = "dynamographdeployments"
DGDSA_PLURAL = "dynamographdeploymentscalingadapters"
DGDSA_VERSION = "v1alpha1"


def adapter_name(dgd: str, component: str) -> str:
    return f"{dgd}-{component.lower()}"


def components(dgd: dict) -> dict[str, dict]:
    """A DGD's components by name, in either served version (v1beta1 list, v1alpha1 map)."""
    spec = dgd.get("spec") or {}
    if isinstance(spec.get("components"), list):
        return {c["name"]: c for c in spec["components"] if isinstance(c, dict) and c.get("name")}
    return dict(spec.get("services") or {})


def _is_ready(dgd: dict) -> bool:
    conditions = (dgd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


DGD_VERSIONS = ("v1beta1", "v1alpha1")  # an older operator serves only v1alpha1


async def dgd_call(call, api_exception: type[Exception], namespace: str, *name: str,
                   versions: tuple[str, ...] = DGD_VERSIONS) -> tuple[str, Any]:
    """`call` (a CustomObjectsApi read of DGDs, blocking: run in a thread) on the first version the
    server serves: (that version, the result). A 404 on the last version is raised."""
    for version in versions:
        try:
            return version, await asyncio.to_thread(call, GROUP, version, namespace, DGD_PLURAL, *name)
        except api_exception as exc:
            if getattr(exc, "status", None) != 404 or version == versions[-1]:
                raise
    raise AssertionError("unreachable")


def make_api_client(cfg: PlannerConfig):
    """A client of our own (never the library's process-wide default): in-cluster, else the kubeconfig."""
    from kubernetes import client, config  # the `planner` extra

    try:
        conf = client.Configuration()
        config.load_incluster_config(client_configuration=conf)
        return client.ApiClient(conf)
    except config.ConfigException:
        return config.new_client_from_config(config_file=cfg.kubeconfig)


def for_config(cfg: PlannerConfig, **options) -> Connector:
    """The DGD connector, or (a graph rendered to plain objects, no operator) the Deployments one."""
    if cfg.kube_deployment_selector:
        from dynamo.planner.connectors.kube_deployments import DeploymentsConnector

        return DeploymentsConnector(cfg, **options)
    return KubernetesConnector(cfg, **options)


class KubernetesConnector(Connector):
    name = "kubernetes"

    def __init__(self, cfg: PlannerConfig, api_client=None) -> None:
        super().__init__(cfg)
        from kubernetes import client  # the `planner` extra

        self._client = client
        self.api = client.CustomObjectsApi(api_client or make_api_client(cfg))
        self.dgd = cfg.dgd_name
        self.k8s_ns = cfg.kube_namespace or "default"
        if not self.dgd:
            raise ValueError("environment 'kubernetes' needs dgd_name (or DYN_PARENT_DGD_K8S_NAME)")
        self.version = "v1beta1"
        self.components: dict[str, str] = {}
        self._ready_desired: dict[str, int] = {}

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _get_dgd(self) -> dict:
        versions = DGD_VERSIONS[DGD_VERSIONS.index(self.version):]  # once v1alpha1, always: the server is older
        self.version, dgd = await dgd_call(self.api.get_namespaced_custom_object, self._client.ApiException,
                                           self.k8s_ns, self.dgd, versions=versions)
        return dgd

    async def start(self) -> None:
        dgd = await self._get_dgd()
        self.components = resolve_pools(components(dgd), self.cfg)
        log.info("kubernetes connector: DGD %s/%s (%s), pools %s", self.k8s_ns, self.dgd, self.version,
                 self.components)

    async def state(self) -> dict[str, PoolState]:
        dgd = await self._get_dgd()
        comps = components(dgd)
        ready = _is_ready(dgd)
        out = {}
        for role, name in self.components.items():
            desired = int(comps[name].get("replicas", 1))
            if ready:
                self._ready_desired[role] = desired
            out[role] = PoolState(desired, desired if ready else min(desired, self._ready_desired.get(role, 0)))
        return out

    async def scale(self, targets: dict[str, int]) -> None:
        for role, n in targets.items():
            name = self.components[role]
            try:
                await self._call(self.api.patch_namespaced_custom_object_scale, GROUP, DGDSA_VERSION, self.k8s_ns,
                                 DGDSA_PLURAL, adapter_name(self.dgd, name), {"spec": {"replicas": int(n)}})
            except self._client.ApiException as exc:
                if exc.status != 404:
                    raise
                await self._patch_dgd(name, int(n))

    async def _patch_dgd(self, name: str, replicas: int) -> None:
        dgd = await self._get_dgd()
        spec = dgd.get("spec", {})
        if isinstance(spec.get("components"), list):
            index = next(i for i, c in enumerate(spec["components"]) if c["name"] == name)
            patch = [{"op": "test", "path": f"/spec/components/{index}/name", "value": name},
                     {"op": "add", "path": f"/spec/components/{index}/replicas", "value": replicas}]
        else:
            # v1alpha1 services are keyed by name: the path itself names the component
            path = f"/spec/services/{name.replace('~', '~0').replace('/', '~1')}"
            patch = [{"op": "add", "path": f"{path}/replicas", "value": replicas}]
        # The client's patch_namespaced_custom_object always sends merge-patch (client 32.x), which
        # would make the server read this list as a merge document: send it as a JSON Patch.
        await self._call(self.api.api_client.call_api, "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
                         "PATCH", path_params={"group": GROUP, "version": self.version, "namespace": self.k8s_ns,
                                               "plural": DGD_PLURAL, "name": self.dgd},
                         header_params={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
                         body=patch, response_type="object", auth_settings=["BearerToken"],
                         _return_http_data_only=True)

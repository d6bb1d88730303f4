"""The GlobalPlanner's `scale_request`: one planner's decision for its graph, checked and applied.

1. Authorization: with `--managed-namespaces`, only planners of those Dynamo namespaces are heard (`error`).
2. `--no-operation`: logged and answered `success`, nothing applied.
3. Budget: with `--max-total-gpus`, the GPUs every managed graph's workers would hold once this decision
   is applied (`budget.py`) must stay within it, or the decision is `rejected` (the planner keeps its size).
   Managed graphs: those of the managed namespaces (`{k8s namespace}-{DGD}`, the operator's naming), else
   every DGD in the Kubernetes namespace. Checks and applies run one at a time, so two planners scaling
   at once cannot both pass against the same pre-scale state.
4. Applied through the Kubernetes connector (the DGD's scaling adapter, else a guarded JSON Patch); the
   answer carries the replicas now desired, by role. A `blocking` request is answered once the scaled
   pools are ready (an `error` if not within the deadline), waiting outside the lock.
"""

from __future__ import annotations

import asyncio
import logging

from dynamo.global_planner import budget
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors import scale_protocol as sp
from dynamo.planner.connectors.kubernetes import DGD_PLURAL, GROUP, KubernetesConnector

log = logging.getLogger("dynamo.global_planner")
READY_POLL_SECONDS = 2.0


class ScaleHandler:
    def __init__(self, api_client, managed_namespaces: list[str], k8s_namespace: str, no_operation: bool = False,
                 max_total_gpus: int = -1, ready_timeout: float = 600.0) -> None:
        from kubernetes import client  # the `planner` extra

        self.api_client = api_client
        self.api = client.CustomObjectsApi(api_client)
        self._errors = client.ApiException
        self.managed = set(managed_namespaces) or None
        self.k8s_namespace = k8s_namespace
        self.no_operation = no_operation
        self.max_total_gpus = max_total_gpus
        self.ready_timeout = ready_timeout
        self._lock = asyncio.Lock()

    async def handle(self, req: sp.ScaleRequest) -> sp.ScaleResponse:
        if self.managed is not None and req.caller_namespace not in self.managed:
            return sp.ScaleResponse(status=sp.ERROR, message=f"Namespace {req.caller_namespace} not authorized")
        wanted = {t.sub_component_type: t.desired_replicas for t in req.target_replicas}
        if self.no_operation:
            log.info("[no-operation] scale request from %s for DGD %s/%s: %s", req.caller_namespace,
                     req.k8s_namespace, req.graph_deployment_name, wanted)
            return sp.ScaleResponse(status=sp.SUCCESS, message="[no-operation] logged, not applied")
        try:
            async with self._lock:
                reply, connector = await self._checked_and_applied(req)
            if req.blocking and connector is not None:  # waited for outside the lock: others go on meanwhile
                reply = await self._until_ready(connector, reply)
            return reply
        except Exception as exc:  # one bad request is answered, never ends the service
            log.warning("scale request from %s failed: %s", req.caller_namespace, exc)
            return sp.ScaleResponse(status=sp.ERROR, message=f"{type(exc).__name__}: {exc}")

    async def _until_ready(self, connector: KubernetesConnector, reply: sp.ScaleResponse) -> sp.ScaleResponse:
        """`blocking`: answer once every scaled pool is ready, or say it is not within the deadline."""
        deadline = asyncio.get_running_loop().time() + self.ready_timeout
        while True:
            state = await connector.state()
            if all(pool.ready >= pool.desired for pool in state.values()):
                return sp.ScaleResponse(status=reply.status, message=reply.message + " (ready)",
                                        current_replicas={r: p.desired for r, p in state.items()})
            if asyncio.get_running_loop().time() >= deadline:
                return sp.ScaleResponse(status=sp.ERROR, current_replicas=reply.current_replicas,
                                        message=f"{reply.message}, but not ready within {self.ready_timeout:g} s")
            await asyncio.sleep(READY_POLL_SECONDS)

    async def _checked_and_applied(self, req: sp.ScaleRequest
                                   ) -> tuple[sp.ScaleResponse, KubernetesConnector | None]:
        dgd = await self._get(req.k8s_namespace, req.graph_deployment_name)
        names = {t.sub_component_type: budget.target_component(dgd, t.sub_component_type, t.component_name)
                 for t in req.target_replicas}
        if self.max_total_gpus >= 0:
            total = await self._gpus_after(req, names)
            if total > self.max_total_gpus:
                message = (f"GPU budget exceeded: request would use {total} total GPUs, max allowed is "
                           f"{self.max_total_gpus}")
                log.warning("rejecting %s from %s: %s", names, req.caller_namespace, message)
                return sp.ScaleResponse(status=sp.REJECTED, message=message), None
            log.info("GPU budget check passed: %d/%d GPUs", total, self.max_total_gpus)
        connector = KubernetesConnector(self._planner_config(req, names), api_client=self.api_client)
        await connector.start()
        await connector.scale({t.sub_component_type: t.desired_replicas for t in req.target_replicas})
        current = {role: pool.desired for role, pool in (await connector.state()).items()}
        log.info("scaled DGD %s/%s for %s: %s", req.k8s_namespace, req.graph_deployment_name, req.caller_namespace,
                 current)
        return sp.ScaleResponse(status=sp.SUCCESS, message=f"scaled {req.graph_deployment_name}",
                                current_replicas=current), connector

    def _planner_config(self, req: sp.ScaleRequest, names: dict[str, str]) -> PlannerConfig:
        mode = "disagg" if len(names) > 1 else ("prefill" if "prefill" in names else "decode")
        return PlannerConfig(environment="kubernetes", dgd_name=req.graph_deployment_name, mode=mode,
                             kube_namespace=req.k8s_namespace, prefill_component=names.get("prefill"),
                             decode_component=names.get("decode"))

    async def _gpus_after(self, req: sp.ScaleRequest, names: dict[str, str]) -> int:
        """GPUs of every managed graph's workers with this request applied."""
        after = {names[t.sub_component_type]: t.desired_replicas for t in req.target_replicas}
        total = 0
        for dgd in await self._managed_graphs():
            meta = dgd.get("metadata") or {}
            if meta.get("name") == req.graph_deployment_name and (meta.get("namespace") or self.k8s_namespace) \
                    == req.k8s_namespace:
                continue
            total += budget.worker_gpus(dgd)
        return total + budget.worker_gpus(await self._get(req.k8s_namespace, req.graph_deployment_name), after)

    async def _managed_graphs(self) -> list[dict]:
        if self.managed is None:
            return await self._list(self.k8s_namespace)
        prefix = f"{self.k8s_namespace}-"
        out = []
        for ns in sorted(self.managed):
            if not ns.startswith(prefix):
                log.warning("managed namespace %r does not start with %r: its DGD is not counted", ns, prefix)
                continue
            try:
                out.append(await self._get(self.k8s_namespace, ns[len(prefix):]))
            except self._errors as exc:
                if exc.status != 404:
                    raise
        return out

    async def _get(self, namespace: str, name: str) -> dict:
        return await self._either_version(self.api.get_namespaced_custom_object, namespace, name)

    async def _list(self, namespace: str) -> list[dict]:
        found = await self._either_version(self.api.list_namespaced_custom_object, namespace)
        return list(found.get("items") or [])

    async def _either_version(self, call, namespace: str, *name: str):
        for version in ("v1beta1", "v1alpha1"):  # an older operator serves only v1alpha1
            try:
                return await asyncio.to_thread(call, GROUP, version, namespace, DGD_PLURAL, *name)
            except self._errors as exc:
                if exc.status != 404 or version == "v1alpha1":
                    raise
        raise AssertionError("unreachable")

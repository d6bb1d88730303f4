"""The GlobalPlanner's `scale_request`: one planner's decision for its graph, checked and applied.

1. Authorization: with `--managed-namespaces`, only planners of those Dynamo namespaces are heard (`error`).
2. `--no-operation`: logged and answered `success`, nothing applied.
3. Budget: with `--max-total-gpus`, the GPUs every managed graph's workers would hold once this decision
   is applied (`budget.py`) must stay within it, or the decision is `rejected` (the planner keeps its size).
   Managed graphs: those of the managed namespaces (`{k8s namespace}-{DGD}`, the operator's naming), else
   every graph in the Kubernetes namespace: DGDs, and graphs rendered to plain Deployments (`graphs.py`). Checks and applies run one at a time, so two planners scaling
   at once cannot both pass against the same pre-scale state.
4. Applied through the Kubernetes connector (the DGD's scaling adapter, else a guarded JSON Patch; a
   rendered graph's Deployment scale subresource), or, under `dynamo.deploy run`, the graph's control
   endpoint (`local_graphs.py`); the
   answer carries the replicas now desired, by role. A `blocking` request is answered once the scaled
   pools are ready (an `error` if not within the deadline), waiting outside the lock.
"""

from __future__ import annotations

import asyncio
import logging

from dynamo.global_planner import budget
from dynamo.global_planner.graphs import Graphs
from dynamo.global_planner.local_graphs import LocalGraphs
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors import scale_protocol as sp
from dynamo.planner.connectors.base import Connector
from dynamo.planner.connectors.kube_deployments import GRAPH_LABEL

log = logging.getLogger("dynamo.global_planner")
READY_POLL_SECONDS = 2.0


class ScaleHandler:
    def __init__(self, graphs: Graphs | LocalGraphs, managed_namespaces: list[str], k8s_namespace: str,
                 no_operation: bool = False, max_total_gpus: int = -1, ready_timeout: float = 600.0) -> None:
        self.graphs = graphs
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
        connector = None
        try:
            async with self._lock:
                reply, connector = await self._checked_and_applied(req)
            if req.blocking and connector is not None:  # waited for outside the lock: others go on meanwhile
                reply = await self._until_ready(connector, reply)
            return reply
        except Exception as exc:  # one bad request is answered, never ends the service
            log.warning("scale request from %s failed: %s", req.caller_namespace, exc)
            return sp.ScaleResponse(status=sp.ERROR, message=f"{type(exc).__name__}: {exc}")
        finally:
            if connector is not None:  # one per request (a local one holds an HTTP session)
                await connector.close()

    async def _until_ready(self, connector: Connector, reply: sp.ScaleResponse) -> sp.ScaleResponse:
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

    async def _checked_and_applied(self, req: sp.ScaleRequest) -> tuple[sp.ScaleResponse, Connector | None]:
        dgd = await self.graphs.get(req.k8s_namespace, req.graph_deployment_name)
        names = {t.sub_component_type: budget.target_component(dgd, t.sub_component_type, t.component_name)
                 for t in req.target_replicas}
        if self.max_total_gpus >= 0:
            total = await self._gpus_after(req, dgd, names)
            if total > self.max_total_gpus:
                message = (f"GPU budget exceeded: request would use {total} total GPUs, max allowed is "
                           f"{self.max_total_gpus}")
                log.warning("rejecting %s from %s: %s", names, req.caller_namespace, message)
                return sp.ScaleResponse(status=sp.REJECTED, message=message), None
            log.info("GPU budget check passed: %d/%d GPUs", total, self.max_total_gpus)
        cfg = self._planner_config(req, names, rendered=bool(dgd.get("rendered")))
        connector = self.graphs.connector(cfg, dgd)
        try:
            await connector.start()
            await connector.scale({t.sub_component_type: t.desired_replicas for t in req.target_replicas})
            current = {role: pool.desired for role, pool in (await connector.state()).items()}
        except BaseException:
            await connector.close()
            raise
        log.info("scaled DGD %s/%s for %s: %s", req.k8s_namespace, req.graph_deployment_name, req.caller_namespace,
                 current)
        return sp.ScaleResponse(status=sp.SUCCESS, message=f"scaled {req.graph_deployment_name}",
                                current_replicas=current), connector

    def _planner_config(self, req: sp.ScaleRequest, names: dict[str, str], rendered: bool) -> PlannerConfig:
        mode = "disagg" if len(names) > 1 else ("prefill" if "prefill" in names else "decode")
        selector = f"{GRAPH_LABEL}={req.graph_deployment_name}" if rendered else None
        return PlannerConfig(environment="kubernetes", dgd_name=req.graph_deployment_name, mode=mode,
                             kube_namespace=req.k8s_namespace, prefill_component=names.get("prefill"),
                             decode_component=names.get("decode"), kube_deployment_selector=selector)

    async def _gpus_after(self, req: sp.ScaleRequest, dgd: dict, names: dict[str, str]) -> int:
        """GPUs of every managed graph's workers with this request applied."""
        after = {names[t.sub_component_type]: t.desired_replicas for t in req.target_replicas}
        total = 0
        for graph in await self.graphs.managed(self.k8s_namespace, self._managed_names()):
            meta = graph.get("metadata") or {}
            if meta.get("name") == req.graph_deployment_name and (meta.get("namespace") or self.k8s_namespace) \
                    == req.k8s_namespace:
                continue
            total += budget.worker_gpus(graph)
        return total + budget.worker_gpus(dgd, after)

    def _managed_names(self) -> set[str] | None:
        """The graphs of the managed namespaces (`{k8s namespace}-{graph}`, the operator's naming), or None: all."""
        if self.managed is None:
            return None
        prefix = f"{self.k8s_namespace}-"
        for ns in sorted(n for n in self.managed if not n.startswith(prefix)):
            log.warning("managed namespace %r does not start with %r: its graph is not counted", ns, prefix)
        return {ns[len(prefix):] for ns in self.managed if ns.startswith(prefix)}

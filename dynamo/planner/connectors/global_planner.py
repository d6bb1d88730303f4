"""`environment: global-planner`: the planner reads its own graph as on Kubernetes (the DGD's replicas
and readiness; a rendered graph's Deployments; under `dynamo.deploy run`, the graph's control endpoint) but sends its decisions to the GlobalPlanner of `global_planner_namespace`, which decides
whether they fit the budget it holds for every graph it manages, and applies them (Dynamo's hierarchical
planner). A rejection (over budget) is logged and the graph keeps its size; an error fails the tick."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors import scale_protocol as sp
from dynamo.planner.connectors.base import Connector, PoolState
from dynamo.runtime import records

log = logging.getLogger(__name__)

REPLY_SECONDS = 60.0  # a scale request is answered once applied (non-blocking) or refused


class GlobalPlannerConnector(Connector):
    name = "global-planner"

    def __init__(self, cfg: PlannerConfig, runtime=None, local: Connector | None = None) -> None:
        super().__init__(cfg)
        if not cfg.global_planner_namespace:
            raise ValueError("environment 'global-planner' needs global_planner_namespace")
        if not cfg.dgd_name:
            raise ValueError("environment 'global-planner' needs dgd_name (or DYN_PARENT_DGD_K8S_NAME)")
        if runtime is None:
            raise ValueError("environment 'global-planner' needs the planner's runtime (request plane)")
        self.runtime = runtime
        if local is None and cfg.control_url:  # under `dynamo.deploy run`: its graph's control endpoint
            from dynamo.planner.connectors.local import LocalConnector

            local = LocalConnector(cfg)
        if local is None:  # its own graph, read as the kubernetes connector reads it (a DGD, or rendered)
            from dynamo.planner.connectors.kubernetes import for_config

            local = for_config(msgspec.structs.replace(cfg, environment="kubernetes"))
        self.local = local
        self.eid = records.EndpointId(cfg.global_planner_namespace, cfg.global_planner_component, sp.SCALE_ENDPOINT)

    async def start(self) -> None:
        await self.local.start()
        log.info("global-planner connector: reading DGD %s, decisions go to %s", self.cfg.dgd_name, self.eid)

    async def state(self) -> dict[str, PoolState]:
        return await self.local.state()

    def request(self, targets: dict[str, int]) -> sp.ScaleRequest:
        names = getattr(self.local, "components", {})
        return sp.ScaleRequest(
            caller_namespace=self.cfg.namespace or "dynamo", graph_deployment_name=self.cfg.dgd_name or "",
            k8s_namespace=self.cfg.kube_namespace or "default", timestamp=time.time(),
            target_replicas=[sp.TargetReplica(sub_component_type=role, desired_replicas=int(n),
                                              component_name=names.get(role)) for role, n in targets.items()])

    async def scale(self, targets: dict[str, int]) -> None:
        reply = await self._send(self.request(targets))
        if reply.status == sp.SUCCESS:
            log.info("GlobalPlanner applied %s: %s", targets, reply.message or reply.current_replicas)
        elif reply.status == sp.REJECTED:
            log.warning("GlobalPlanner rejected %s: %s", targets, reply.message)
        else:
            raise RuntimeError(f"GlobalPlanner scaling failed: {reply.message}")

    async def _send(self, request: sp.ScaleRequest) -> sp.ScaleResponse:
        found = await self.runtime.store.get_prefix(records.endpoint_prefix(records.INSTANCES, self.eid))
        if not found:
            raise RuntimeError(f"no GlobalPlanner serves {self.eid}")
        record = records.instance_decoder.decode(next(iter(found.values())))
        stream = await self.runtime.open_stream(record.address, sp.SCALE_ENDPOINT, sp.encode(request))
        try:
            first = await asyncio.wait_for(anext(aiter(stream)), REPLY_SECONDS)
        finally:
            stream.cancel()
        return sp.decode_response(first)

    async def close(self) -> None:
        await self.local.close()

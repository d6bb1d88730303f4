"""The graphs of one `python -m dynamo.deploy run` (a file of several graphs), as the GlobalPlanner reads
and scales them there: each through its control endpoint (`GET /status`, `POST /scale`), which `run` hands
the GlobalPlanner as `DYN_DEPLOY_CONTROL_URLS` ({graph name: URL}). A graph is read in the DGD (v1alpha1)
shape `budget.py` reads: its services' types, replicas and GPUs per replica."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector
from dynamo.planner.connectors.local import LocalConnector


def parse_urls(text: str) -> dict[str, str]:
    """`DYN_DEPLOY_CONTROL_URLS`: a JSON object {graph name: control URL}; ValueError otherwise."""
    try:
        urls = json.loads(text)
    except ValueError:
        urls = None
    if not isinstance(urls, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in urls.items()):
        raise ValueError("DYN_DEPLOY_CONTROL_URLS must be a JSON object {graph name: control URL}")
    return urls


class LocalGraphs:
    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The graph `name` of this run; LookupError when the run has none of that name."""
        url = self.urls.get(name)
        if url is None:
            raise LookupError(f"no graph {name!r} in this `dynamo.deploy run` (graphs: {', '.join(sorted(self.urls))})")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url.rstrip("/") + "/status") as resp:
                status = await resp.json(content_type=None)
        services = {svc: {"componentType": spec.get("componentType"), "subComponentType": spec.get("subComponentType"),
                          "replicas": status["services"].get(svc, 0),
                          "resources": {"limits": {"gpu": spec.get("gpus") or 0}}}
                    for svc, spec in (status.get("components") or {}).items()}
        return {"metadata": {"name": name, "namespace": namespace}, "spec": {"services": services},
                "control_url": url}

    async def managed(self, namespace: str, names: set[str] | None) -> list[dict[str, Any]]:
        return [await self.get(namespace, name) for name in sorted(self.urls) if names is None or name in names]

    def connector(self, cfg: PlannerConfig, graph: dict[str, Any]) -> Connector:
        return LocalConnector(cfg, url=graph["control_url"])

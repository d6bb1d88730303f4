"""Local connector: the control endpoint of `python -m dynamo.deploy run`
(`GET /status`, `POST /scale`). A replica counts as ready when the supervisor's probes
say `ready`; scale-down stops the highest replicas with SIGTERM, so they drain."""

from __future__ import annotations

import logging

import aiohttp

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState, resolve_pools

log = logging.getLogger(__name__)


class LocalConnector(Connector):
    name = "local"

    def __init__(self, cfg: PlannerConfig, url: str | None = None) -> None:
        super().__init__(cfg)
        self.url = (url or cfg.control_url or "").rstrip("/")
        if not self.url:
            raise ValueError("environment 'local' needs control_url (the `dynamo.deploy run` control endpoint; "
                             "`run` injects it into its planner components as DYN_DEPLOY_CONTROL_URL)")
        self.components: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._session.request(method, self.url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def start(self) -> None:
        status = await self._request("GET", "/status")
        # `components` (name -> componentType/subComponentType) from a current `run`; names only otherwise
        specs = status.get("components") or {name: {} for name in status["services"]}
        self.components = resolve_pools(specs, self.cfg)
        log.info("local connector: %s, pools %s", self.url, self.components)

    async def state(self) -> dict[str, PoolState]:
        status = await self._request("GET", "/status")
        out = {}
        for role, name in self.components.items():
            ready = sum(1 for r in status["replicas"] if r["service"] == name and r["state"] == "ready")
            out[role] = PoolState(desired=int(status["services"][name]), ready=ready)
        return out

    async def scale(self, targets: dict[str, int]) -> None:
        for role, n in targets.items():
            await self._request("POST", "/scale", {"service": self.components[role], "replicas": int(n)})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

"""Virtual connector: decisions go into the discovery store for an external
orchestrator, which acknowledges them once applied (the role of Dynamo's Rust
`VirtualConnectorCoordinator`).

Keys (not leased: a decision outlives a planner restart):
- `v1/planner/{ns}/decision`: `{"decision_id", "model_name", "num_prefill_workers",
  "num_decode_workers", "timestamp"}`, written by the planner;
- `v1/planner/{ns}/scaled`: `{"scaled_decision_id"}`, written by the orchestrator when the
  decision is in effect. Until then the planner counts the new replicas as pending (and
  gives up after `replica_ready_timeout_seconds`, as for every connector).

`VirtualOrchestrator` is the other side, for orchestrators written in Python.
"""

from __future__ import annotations

import asyncio
import json
import time

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState

FIELDS = {"prefill": "num_prefill_workers", "decode": "num_decode_workers"}


def decision_key(namespace: str) -> str:
    return f"v1/planner/{namespace}/decision"


def scaled_key(namespace: str) -> str:
    return f"v1/planner/{namespace}/scaled"


class VirtualConnector(Connector):
    name = "virtual"

    def __init__(self, cfg: PlannerConfig, store=None) -> None:
        super().__init__(cfg)
        if store is None:
            raise ValueError("the virtual connector needs the discovery store")
        self.store = store
        self.ns = cfg.namespace
        self.decision: dict = {}
        self.applied: dict[str, int] = {}

    async def start(self) -> None:
        raw = await self.store.get(decision_key(self.ns))
        self.decision = json.loads(raw) if raw else {"decision_id": 0}
        for role in self.cfg.roles:
            self.decision.setdefault(FIELDS[role], self.cfg.min_for(role) or 1)
        if await self._acked() >= self.decision["decision_id"]:
            self.applied = {r: self.decision[FIELDS[r]] for r in self.cfg.roles}
        else:
            self.applied = {r: self.cfg.min_for(r) for r in self.cfg.roles}

    async def _acked(self) -> int:
        raw = await self.store.get(scaled_key(self.ns))
        return int(json.loads(raw).get("scaled_decision_id", 0)) if raw else 0

    async def state(self) -> dict[str, PoolState]:
        if await self._acked() >= self.decision["decision_id"]:
            self.applied = {r: self.decision[FIELDS[r]] for r in self.cfg.roles}
        return {r: PoolState(self.decision[FIELDS[r]], min(self.applied[r], self.decision[FIELDS[r]]))
                for r in self.cfg.roles}

    async def scale(self, targets: dict[str, int]) -> None:
        decision = dict(self.decision)
        for role, n in targets.items():
            decision[FIELDS[role]] = int(n)
        decision.update(decision_id=int(self.decision["decision_id"]) + 1, model_name=self.cfg.model_name,
                        timestamp=time.time())
        await self.store.put(decision_key(self.ns), json.dumps(decision).encode(), leased=False)
        self.decision = decision


class VirtualOrchestrator:
    """The orchestrator's side: wait for a new decision, apply it, acknowledge it."""

    def __init__(self, store, namespace: str) -> None:
        self.store = store
        self.ns = namespace
        self.seen = 0

    async def next_decision(self, timeout: float, poll: float = 0.2) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = await self.store.get(decision_key(self.ns))
            if raw:
                decision = json.loads(raw)
                if decision["decision_id"] > self.seen:
                    self.seen = decision["decision_id"]
                    return decision
            await asyncio.sleep(poll)
        return None

    async def ack(self, decision_id: int) -> None:
        await self.store.put(scaled_key(self.ns), json.dumps({"scaled_decision_id": decision_id}).encode(),
                             leased=False)

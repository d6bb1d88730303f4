"""One supervised replica of a service, as the supervisor (`supervisor.py`) tracks it: the plan and launch
it was started from, its process, and the state its probes and exits put it in (the status table and
`GET /status` show `info()`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from dynamo.deploy.plan import Launch, ServicePlan


@dataclass
class Replica:
    service: str
    index: int
    launch: Launch
    plan: ServicePlan | None = None  # what it was started from (and restarts from)
    proc: asyncio.subprocess.Process | None = None
    state: str = "starting"
    restarts: int = 0
    failures: int = 0  # consecutive short runs, for backoff
    started: float = 0.0
    exit_code: int | None = None
    restart_at: float = 0.0
    stopping: bool = False
    live: bool = False  # the startup probe (else liveness) has passed
    ready: bool = False
    unhealthy: bool = False  # failing its liveness probe
    tasks: list[asyncio.Task] = field(default_factory=list)
    # Set once the spawn has ended (a process, or none): a retirement waits for it before it looks at `proc`,
    # so a replica retired mid-spawn is not left running untracked.
    spawned: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int = 1  # the apply whose plan it runs (1: the file `run` started with)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def info(self) -> dict[str, Any]:
        return {"service": self.service, "replica": self.index, "pid": self.pid, "state": self.state,
                "http_port": self.launch.http_port, "system_port": self.launch.system_port,
                "listen_port": self.launch.shared_port,  # a frontend's service socket, shared by its replicas
                "restarts": self.restarts, "exit_code": self.exit_code, "generation": self.generation,
                "uptime_s": round(time.monotonic() - self.started, 1) if self.proc and self.started else 0.0}

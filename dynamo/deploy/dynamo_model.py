"""`DynamoModel` (nvidia.com/v1alpha1) beside a DGD: LoRA adapters for the workers whose
`modelRef.name` is the model's `baseModelName`.

What the operator does in a cluster, done here for `deploy run` and `deploy render`:
- `run`: `AdapterReconciler` keeps every ready replica of a matching service holding the
  adapter (`GET`/`POST /v1/loras` on its system port), so replicas scaled up or restarted
  later get it too; `status()` gives TOTAL/READY per adapter.
- `render`: each matching worker Deployment gets a sidecar running this module
  (`python -m dynamo.deploy.dynamo_model --port P --name N --uri U`), which does the same
  for its own pod over localhost, for as long as the pod lives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import msgspec

from dynamo.deploy.model import Base, Graph, Metadata
from dynamo.deploy.probes import local_request

log = logging.getLogger("dynamo.deploy.models")

KIND = "DynamoModel"
RECONCILE_SECONDS = 2.0


class Source(Base):
    uri: str


class ModelSpec(Base):
    modelName: str
    baseModelName: str
    modelType: Literal["base", "lora", "adapter"] = "base"
    source: Union[Source, None] = None


class DynamoModel(Base):
    apiVersion: str
    kind: str
    metadata: Metadata
    spec: ModelSpec
    status: Union[dict[str, Any], None] = None

    @property
    def is_adapter(self) -> bool:
        return self.spec.modelType in ("lora", "adapter")


def load_models(docs: list[Any], graph: Graph) -> list[DynamoModel]:
    """The DynamoModel documents among `docs`, checked against the graph; ValueError says what is wrong."""
    models = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        try:
            dm = msgspec.convert(doc, DynamoModel)
        except msgspec.ValidationError as exc:
            raise ValueError(f"document {index} ({KIND}): {exc}") from None
        if dm.is_adapter and (dm.spec.source is None or not dm.spec.source.uri):
            raise ValueError(f"{KIND} {dm.metadata.name}: spec.source.uri is required for modelType "
                             f"{dm.spec.modelType}")
        if dm.is_adapter and not matching_services(graph, dm):
            raise ValueError(f"{KIND} {dm.metadata.name}: no service of {graph.metadata.name} has "
                             f"modelRef.name {dm.spec.baseModelName!r}")
        models.append(dm)
    return models


def matching_services(graph: Graph, dm: DynamoModel) -> list[str]:
    return [name for name, svc in graph.spec.services.items()
            if (svc.modelRef or {}).get("name") == dm.spec.baseModelName]


# ----- one worker's adapters over its system port ------------------------------------------

async def http_json(port: int, method: str, path: str, body: Any = None, timeout: float = 120.0) -> tuple[int, Any]:
    """One JSON request to 127.0.0.1:`port` (no client library needed in the image)."""
    async def call() -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        status, payload = await local_request(port, method, path, data, "application/json")
        try:
            return status, json.loads(payload or b"null")
        except ValueError:
            return status, None

    return await asyncio.wait_for(call(), timeout)


async def ensure_loaded(port: int, name: str, uri: str) -> bool:
    """True once the worker on `port` holds adapter `name` (loading it if needed)."""
    status, listing = await http_json(port, "GET", "/v1/loras", timeout=10.0)
    if status == 200 and name in ((listing or {}).get("loras") or {}):
        return True
    status, answer = await http_json(port, "POST", "/v1/loras", {"lora_name": name, "source": {"uri": uri}})
    if status != 200:
        log.warning("loading %s on port %d failed (%d): %s", name, port, status, (answer or {}).get("message"))
    return status == 200


# ----- `deploy run` ------------------------------------------------------------------------

@dataclass
class AdapterReconciler:
    """Keeps the adapters of `models` on every ready replica of their matching services."""

    supervisor: Any  # dynamo.deploy.supervisor.Supervisor
    graph: Graph
    models: list[DynamoModel]
    ready: dict[str, set[str]] = field(default_factory=dict)  # adapter -> replica names holding it
    total: dict[str, int] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception as exc:  # one bad round must not end adapter placement for good
                log.warning("adapter reconcile failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONCILE_SECONDS)

    async def reconcile_once(self) -> None:
        for dm in (m for m in self.models if m.is_adapter):
            services = set(matching_services(self.graph, dm))
            reps = [r for r in self.supervisor.replicas.values() if r.service in services and not r.stopping]
            holding = set()
            for rep in reps:
                port = rep.launch.system_port
                if rep.state != "ready" or port is None:
                    continue
                try:
                    if await ensure_loaded(port, dm.spec.modelName, dm.spec.source.uri):  # type: ignore[union-attr]
                        holding.add(rep.name)
                except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
                    log.debug("%s: %s", rep.name, exc)
            before = (self.total.get(dm.spec.modelName), self.ready.get(dm.spec.modelName))
            self.total[dm.spec.modelName], self.ready[dm.spec.modelName] = len(reps), holding
            if before != (len(reps), holding):
                self.supervisor._touch()  # the status table shows TOTAL/READY

    def status(self) -> list[dict[str, Any]]:
        return [{"model": dm.spec.modelName, "base": dm.spec.baseModelName, "type": dm.spec.modelType,
                 "total": self.total.get(dm.spec.modelName, 0), "ready": len(self.ready.get(dm.spec.modelName, ()))}
                for dm in self.models]

    def table(self) -> str:
        rows = [("MODEL", "BASE", "TYPE", "TOTAL", "READY")]
        rows += [(s["model"], s["base"], s["type"], str(s["total"]), str(s["ready"])) for s in self.status()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


# ----- `deploy render`: a sidecar per matching worker pod -----------------------------------

def add_sidecars(objects: list[dict[str, Any]], graph: Graph, models: list[DynamoModel], system_port: int,
                 k8s_name) -> None:
    """Add a loader sidecar for each adapter to the Deployments of its matching services; it reaches the
    worker on the pod's `system` port (`system_port` where the pod names none)."""
    by_name = {obj["metadata"]["name"]: obj for obj in objects if obj.get("kind") == "Deployment"}
    for dm in (m for m in models if m.is_adapter):
        for service in matching_services(graph, dm):
            deployment = by_name.get(k8s_name(graph.metadata.name, service))
            if deployment is None:
                continue
            pod = deployment["spec"]["template"]["spec"]
            image = pod["containers"][0].get("image")
            # the worker's system port as rendered (the manifest may move it with DYN_SYSTEM_PORT)
            port = next((p["containerPort"] for p in pod["containers"][0].get("ports", [])
                         if isinstance(p, dict) and p.get("name") == "system"), system_port)
            pod["containers"].append({
                "name": f"lora-{k8s_name(dm.spec.modelName)}"[:63], "image": image,
                "command": ["python3", "-m", "dynamo.deploy.dynamo_model"],
                "args": ["--port", str(port), "--name", dm.spec.modelName,
                         "--uri", dm.spec.source.uri],  # type: ignore[union-attr]
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            })


async def agent(port: int, name: str, uri: str, interval: float) -> None:
    while True:
        try:
            await ensure_loaded(port, name, uri)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
            log.debug("worker on port %d not reachable yet: %s", port, exc)
        await asyncio.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dynamo.deploy.dynamo_model",
                                 description="Keep one LoRA adapter loaded on the worker of this pod")
    ap.add_argument("--port", type=int, required=True, help="the worker's system port (localhost)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--interval", type=float, default=10.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent(args.port, args.name, args.uri, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())

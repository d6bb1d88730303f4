"""`DynamoModel` (nvidia.com/v1alpha1) beside a DGD: LoRA adapters for the workers whose
`modelRef.name` is the model's `baseModelName`.

What the operator does in a cluster, done here for `deploy run` and `deploy render`:
- `run`: `AdapterReconciler` keeps every ready replica of a matching service holding the
  adapter (`GET`/`POST /v1/loras` on its system port), so replicas scaled up or restarted
  later get it too; `status()` gives TOTAL/READY per adapter. An apply hands it the file's new set
  (`replace`): an added adapter is placed, one with a new source reloaded, a removed one unloaded
  (`DELETE /v1/loras/NAME`) from every ready replica of its services that lists it, as the operator does
  for an edited or deleted DynamoModel. In a file of several graphs each graph takes the DynamoModels its
  services serve (`load_models`).
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
import urllib.parse
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


def load_models(docs: list[Any], graph: Graph, graphs: list[Graph] | None = None) -> list[DynamoModel]:
    """The DynamoModel documents among `docs` for `graph`, checked; ValueError says what is wrong. `graphs`: the
    file's graphs (default: `graph` alone). An adapter belongs to the graphs with a service of its base
    (`modelRef.name`); one matching none of them is an error; one of another graph of the file is left to that
    graph's run. A base model (nothing to place) is listed by every graph."""
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
        if dm.is_adapter and not any(matching_services(g, dm) for g in graphs or [graph]):
            raise ValueError(f"{KIND} {dm.metadata.name}: no service of {_names(graphs or [graph])} has "
                             f"modelRef.name {dm.spec.baseModelName!r}")
        if dm.is_adapter and not matching_services(graph, dm):
            continue  # another graph's
        if dm.is_adapter and any(m.is_adapter and m.spec.modelName == dm.spec.modelName for m in models):
            raise ValueError(f"{KIND} {dm.metadata.name}: another {KIND} of the file already names adapter "
                             f"{dm.spec.modelName!r} (each would replace the other's on the workers)")
        models.append(dm)
    return models


def model_errors(docs: list[Any], graphs: list[Graph]) -> list[str]:
    """What `load_models` refuses for any graph of the file (`validate`'s view of what `run`, `render` and
    `apply` refuse), each once."""
    errors: list[str] = []
    for graph in graphs:
        try:
            load_models(docs, graph, graphs)
        except ValueError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
    return errors


def _names(graphs: list[Graph]) -> str:
    return " or ".join(g.metadata.name for g in graphs)


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


async def held(port: int) -> set[str]:
    """The adapters the worker on `port` holds."""
    status, listing = await http_json(port, "GET", "/v1/loras", timeout=10.0)
    return set((listing or {}).get("loras") or {}) if status == 200 else set()


async def ensure_loaded(port: int, name: str, uri: str, quiet: bool = False) -> bool:
    """True once the worker on `port` holds adapter `name` (loading it if needed)."""
    return name in await held(port) or await load(port, name, uri, quiet)


async def load(port: int, name: str, uri: str, quiet: bool = False) -> bool:
    """True once the worker on `port` holds adapter `name` from `uri` (posting the same source again is a
    no-op). A worker holding it from another source answers 409, loading no second copy: that one is
    unloaded first, as the operator reloads an edited DynamoModel on every endpoint. A failure is logged
    unless `quiet` (a caller retrying every few seconds says it once)."""
    body = {"lora_name": name, "source": {"uri": uri}}
    status, answer = await http_json(port, "POST", "/v1/loras", body)
    if status == 409 and await unload(port, name) is None:
        status, answer = await http_json(port, "POST", "/v1/loras", body)
    if status != 200 and not quiet:
        log.warning("loading %s on port %d failed (%d): %s; trying again every %g s", name, port, status,
                    (answer or {}).get("message"), RECONCILE_SECONDS)
    return status == 200


async def unload(port: int, name: str) -> str | None:
    """Unload adapter `name` from the worker on `port`: None once it no longer holds it, else why not (the
    caller says it)."""
    status, answer = await http_json(port, "DELETE", f"/v1/loras/{urllib.parse.quote(name, safe='')}", timeout=30.0)
    return None if status in (200, 404) else f"({status}): {(answer or {}).get('message')}"


# ----- `deploy run` ------------------------------------------------------------------------

@dataclass
class AdapterReconciler:
    """Keeps the adapters of `models` on every ready replica of their matching services, and unloads those
    an apply took out of the file (or moved off a service) from the replicas it loaded them on.

    A retired adapter is unloaded from every ready replica of those services whose `GET /v1/loras` names it
    (wherever it came from, as the operator unloads a deleted DynamoModel from every endpoint). `replace`
    swaps the set while `run` goes on: everything runs on one event loop, a round works on the
    set it started with (a model replaced meanwhile writes no status), and the next round, started at
    once, works on the new one."""

    supervisor: Any  # dynamo.deploy.supervisor.Supervisor
    graph: Graph
    models: list[DynamoModel]
    ready: dict[str, set[str]] = field(default_factory=dict)  # adapter -> replica names holding it
    total: dict[str, int] = field(default_factory=dict)
    # adapter -> services whose replicas must no longer hold it (replaced as a whole, never changed in place)
    retired: dict[str, frozenset[str]] = field(default_factory=dict)
    # (replica, pid) -> {adapter: source} it was loaded from here: what a changed source must replace, and
    # the replicas not ready now that a removal must still come back to (a new pid holds none of them)
    sources: dict[tuple[str, int | None], dict[str, str]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # (replica, pid, adapter) for a failing load said, (replica, pid, "unload " + adapter) for a failing unload
    warned: set[tuple[str, int | None, str]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.changed.clear()
            try:
                await self.reconcile_once()
            except Exception as exc:  # one bad round must not end adapter placement for good
                log.warning("adapter reconcile failed: %s", exc)
            await _either(stop, self.changed, RECONCILE_SECONDS)

    def replace(self, graph: Graph, models: list[DynamoModel]) -> dict[str, list[str]]:
        """An apply's DynamoModels (checked by `load_models`); what changed, for its response."""
        before = {m.spec.modelName: m for m in self.models if m.is_adapter}
        after = {m.spec.modelName: m for m in models if m.is_adapter}
        for name, dm in before.items():
            gone = set(matching_services(self.graph, dm)) - set(matching_services(graph, after[name]) if name in
                                                               after else ())
            if gone:
                self.retired[name] = self.retired.get(name, frozenset()) | gone
        for name, dm in after.items():  # back on a service it was retired from: placed again, not unloaded
            left = self.retired.pop(name, frozenset()) - set(matching_services(graph, dm))
            if left:
                self.retired[name] = left
        self.graph, self.models = graph, list(models)
        for name in [n for n in {*self.total, *self.ready} if n not in after]:
            self.total.pop(name, None)
            self.ready.pop(name, None)
        self.changed.set()
        self.supervisor.touch()
        spec = {n: (m.spec.baseModelName, m.spec.source.uri if m.spec.source else None) for n, m in after.items()}
        was = {n: (m.spec.baseModelName, m.spec.source.uri if m.spec.source else None) for n, m in before.items()}
        return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
                "changed": sorted(n for n in after if n in before and spec[n] != was[n])}

    async def reconcile_once(self) -> None:
        models, graph = [m for m in self.models if m.is_adapter], self.graph  # this round's set
        live = {(r.name, r.pid) for r in self.supervisor.replicas.values()}
        self.sources = {key: held_here for key, held_here in self.sources.items() if key in live}
        self.warned = {key for key in self.warned if key[:2] in live}
        for name, services in list(self.retired.items()):
            if await self._unload(name, services) and self.retired.get(name) is services:
                del self.retired[name]
        for dm in models:
            await self._place(dm, graph)

    async def _place(self, dm: DynamoModel, graph: Graph) -> None:
        name, uri = dm.spec.modelName, dm.spec.source.uri  # type: ignore[union-attr]
        services = set(matching_services(graph, dm))
        reps = [r for r in self.supervisor.replicas.values() if r.service in services and not r.stopping]
        holding = set()
        for rep in reps:
            port, pid = rep.launch.system_port, rep.pid
            if rep.state != "ready" or port is None:
                continue
            said = (rep.name, pid, name)  # a failing load is said once per replica process, not every round
            try:
                known = self.sources.get((rep.name, pid), {})
                if (name in await held(port) and known.get(name) == uri) or \
                        await load(port, name, uri, quiet=said in self.warned):
                    self.warned.discard(said)
                    if rep.pid == pid:  # restarted meanwhile: the new process is placed next round
                        self.sources.setdefault((rep.name, pid), {})[name] = uri
                        holding.add(rep.name)
                else:
                    self.warned.add(said)
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
                log.debug("%s: %s", rep.name, exc)
        if not any(m is dm for m in self.models):
            return  # replaced meanwhile: its counts are no longer shown
        before = (self.total.get(name), self.ready.get(name))
        self.total[name], self.ready[name] = len(reps), holding
        if before != (len(reps), holding):
            self.supervisor.touch()  # the status table shows TOTAL/READY

    async def _unload(self, name: str, services: frozenset[str]) -> bool:
        """Unload `name` from every replica of `services` holding it; True once none does. A replica not
        ready now is asked again later if it was loaded here."""
        clean = True
        for rep in [r for r in self.supervisor.replicas.values() if r.service in services]:
            port, pid = rep.launch.system_port, rep.pid
            if rep.state != "ready" or port is None:
                clean = clean and name not in self.sources.get((rep.name, pid), {})
                continue
            try:
                holds = name in await held(port)
                why = await unload(port, name) if holds else None
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
                log.debug("%s: %s", rep.name, exc)
                clean = False
                continue
            if why is None:
                if holds:
                    log.info("%s: adapter %s unloaded", rep.name, name)
                self.sources.get((rep.name, pid), {}).pop(name, None)
                continue
            clean = False  # tried again next round, said once
            said = (rep.name, pid, f"unload {name}")  # apart from a failing load's (the same adapter may come back)
            if said not in self.warned:
                self.warned.add(said)
                log.warning("%s: unloading adapter %s failed %s; trying again every %g s", rep.name, name, why,
                            RECONCILE_SECONDS)
        return clean

    def status(self) -> list[dict[str, Any]]:
        return [{"model": dm.spec.modelName, "base": dm.spec.baseModelName, "type": dm.spec.modelType,
                 "total": self.total.get(dm.spec.modelName, 0), "ready": len(self.ready.get(dm.spec.modelName, ()))}
                for dm in self.models]

    def table(self) -> str:
        rows = [("MODEL", "BASE", "TYPE", "TOTAL", "READY")]
        rows += [(s["model"], s["base"], s["type"], str(s["total"]), str(s["ready"])) for s in self.status()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


async def _either(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    """Until either event is set or `timeout` passes."""
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


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
    failing = False  # said once until it loads
    while True:
        try:
            failing = not await ensure_loaded(port, name, uri, quiet=failing)
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

"""The HPAs and KEDA ScaledObjects of one graph under `dynamo.deploy run`: which of the file's autoscalers
this graph evaluates, the evaluator and driver task of each, whose replicas a scaling adapter holds once its
autoscaler is gone, and what a `POST /apply` of a changed file changes of them. `local_autoscalers.py` owns
one autoscaler's evaluation; `run.py` owns the graph and the order of an apply (the new set is prepared
before the Applier diffs, since it decides whose replicas the manifest's count may set, and committed only
once the Applier accepted the apply).

An apply, as `kubectl apply --prune` of the file would change the objects:
- an autoscaler new to the file starts evaluating from the service's current count;
- one edited (same kind and name, another spec, service or container requests) gets a new evaluator that
  keeps the old one's history, also when it now targets another service: the HPA controller keys its
  recommendations (stabilization windows) and scale events (policies) by the HPA object and drops them only
  when the object is deleted; KEDA keeps a ScaledObject's `lastActiveTime` in its status and counts
  `initialCooldownPeriod` from its creation;
- one left out of the file (or moved off a service) stops: its driver task is cancelled and awaited. What
  the service's count is then depends on what it targeted. A `DynamoGraphDeploymentScalingAdapter`
  outlives it (Dynamo's autoscaling guide, "Replica Ownership Model": the adapter is the source of truth
  for the service's replicas, and a webhook refuses edits of the DGD's `services[X].replicas`): the count
  the autoscaler left stays, `/scale` changes it (as `kubectl scale dgdsa` does), the manifest's `replicas`
  does not, in this apply or a later one, until the service disables its adapter (`scalingAdapter.disable`)
  or leaves the graph. A Deployment / LeaderWorkerSet target (what `render` points an autoscaler at) gets
  the manifest's `replicas` again: `render` writes it back once no autoscaler manages the object, and
  `kubectl apply` of the file sets it;
- one unchanged keeps its evaluator and task as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from dynamo.deploy import autoscalers, local_autoscalers
from dynamo.deploy.local_autoscalers import LocalAutoscaler
from dynamo.deploy.model import Graph

log = logging.getLogger("dynamo.deploy")

Key = tuple[str, str, str]  # (kind, namespace, name): the object's identity, as the controllers key their state


@dataclass(frozen=True)
class Wanted:
    """One autoscaler of the file that this graph evaluates, and what its evaluator is built from."""

    key: Key
    service: str
    doc: dict[str, Any]
    requests: dict[str, float]  # the service's container requests (an HPA's utilisation divides by them)
    target: tuple[str, str] = ("", "")  # its scaleTargetRef's (kind, name)

    @property
    def fingerprint(self) -> str:
        return json.dumps([self.service, self.doc.get("spec"), self.requests], sort_keys=True, default=str)


@dataclass
class Diff:
    """Running vs wanted autoscalers by identity (`Key`): new ones, edited ones (same identity, another
    fingerprint), ones gone from the file and ones left as they are."""

    added: list[Key] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    kept: list[Key] = field(default_factory=list)


def diff(running: dict[Key, str], wanted: dict[Key, str]) -> Diff:
    """Running vs wanted autoscalers, each as {identity: fingerprint}; every list in file / running order."""
    out = Diff(removed=[k for k in running if k not in wanted])
    for key, print_ in wanted.items():
        bucket = out.added if key not in running else out.kept if running[key] == print_ else out.changed
        bucket.append(key)
    return out


def wanted(documents: list[Any], graph: Graph, notes: list[str]) -> dict[Key, Wanted]:
    """The autoscalers of `documents` this graph evaluates: the first of each of its services' (the others
    said in `notes`, as `validate` warns of them)."""
    name, out = graph.metadata.name, {}
    for (_, service), found in autoscalers.managed(documents, [graph]).items():
        if len(found) > 1:
            notes.append(f"{name}/{service}: only {found[0].label} of its {len(found)} autoscalers is evaluated")
        first, doc = found[0], documents[found[0].document]
        key = (first.kind, str((doc.get("metadata") or {}).get("namespace") or ""), first.name)
        out[key] = Wanted(key, service, doc, local_autoscalers.service_requests(graph.spec.services[service]),
                          (first.target_kind, first.target_name))
    return out


def label(key: Key) -> str:
    return f"{key[0]} {key[2]}"


@dataclass
class Entry:
    """One evaluated autoscaler: what it was built from, its evaluator, and the task driving it (None until
    `GraphAutoscalers.start`)."""

    wanted: Wanted
    scaler: LocalAutoscaler
    task: asyncio.Task | None = None


@dataclass
class Pending:
    """An apply's autoscalers, prepared (built, nothing started or stopped) for `GraphAutoscalers.commit`."""

    diff: Diff
    built: dict[Key, Entry]  # added and changed ones
    services: set[str]  # every service the new set scales
    notes: list[str]
    held: dict[str, str] = field(default_factory=dict)  # service -> the scaling adapter holding its count after
    released: list[str] = field(default_factory=list)  # services no autoscaler or adapter holds any more

    @property
    def owned(self) -> set[str]:
        """The services whose count is not the manifest's after this apply: autoscaled, or held by an adapter."""
        return self.services | set(self.held)


class GraphAutoscalers:
    """The evaluated autoscalers of one graph and their driver tasks; iterating gives the evaluators (the
    control endpoint's `/status` lists their last evaluation)."""

    def __init__(self, sessions: Callable[[str], list[int]], prometheus: str | None, sync_period: float) -> None:
        self.sessions, self.prometheus, self.sync_period = sessions, prometheus, sync_period
        self.entries: dict[Key, Entry] = {}
        self.held: dict[str, str] = {}  # service -> its scaling adapter, which holds the count its autoscaler left
        self._drive: Callable[[LocalAutoscaler], Any] | None = None  # set by `start`: a coroutine per evaluator

    def __iter__(self) -> Iterator[LocalAutoscaler]:
        return iter([entry.scaler for entry in self.entries.values()])

    def __len__(self) -> int:
        return len(self.entries)

    def services(self) -> set[str]:
        return {entry.scaler.service for entry in self.entries.values()}

    def prepare(self, documents: list[Any], graph: Graph) -> Pending:
        """The file's autoscalers for `graph` against the running ones, built, nothing started or stopped.
        ValueError for a document that cannot be read (`validate` refuses such a file first)."""
        notes: list[str] = []
        want = wanted(documents, graph, notes)
        change = diff({k: e.wanted.fingerprint for k, e in self.entries.items()},
                      {k: w.fingerprint for k, w in want.items()})
        built = {}
        for key, item in want.items():
            scaler = local_autoscalers.build(item.doc, item.service, lambda svc=item.service: self.sessions(svc),
                                             item.requests, self.prometheus, self.sync_period, notes)
            if scaler is not None and (key in change.added or key in change.changed):
                built[key] = Entry(item, scaler)
            elif scaler is None and key in change.added:  # nothing of it is evaluated (`notes` say why)
                change.added.remove(key)
            elif scaler is None and key in change.changed:  # edited into one that evaluates nothing: it stops
                change.changed.remove(key)
                change.removed.append(key)
        services = {e.scaler.service for k, e in self.entries.items() if k in change.kept}
        pending = Pending(change, built, services | {e.scaler.service for e in built.values()}, notes)
        self._ownership(pending, graph)
        return pending

    def _ownership(self, pending: Pending, graph: Graph) -> None:
        """Who holds the count of a service an autoscaler leaves (module docstring): its scaling adapter, or
        the manifest again (`released`)."""
        def has_adapter(service: str) -> bool:
            svc = graph.spec.services.get(service)
            return svc is not None and not (svc.scalingAdapter and svc.scalingAdapter.disable)

        held = {s: a for s, a in self.held.items() if s not in pending.services and has_adapter(s)}
        released = [s for s in self.held if s not in held and s not in pending.services]
        for key in pending.diff.removed + pending.diff.changed:
            old = self.entries.get(key)
            service = old.scaler.service if old is not None else ""
            if old is None or service in pending.services or service in held:
                continue
            if old.wanted.target[0] == autoscalers.ADAPTER_KIND and has_adapter(service):
                held[service] = old.wanted.target[1]
            else:
                released.append(service)
        pending.held, pending.released = held, sorted(set(released))

    def commit(self, pending: Pending) -> list[asyncio.Task]:
        """Make `pending` the running set: removed and changed evaluators' tasks are cancelled (returned, to
        be awaited), new ones started. Synchronous, so no old driver acts in between."""
        stopped = []
        for key in pending.diff.removed + pending.diff.changed:
            old = self.entries.pop(key, None)
            if old is not None and old.task is not None:
                old.task.cancel()
                stopped.append(old.task)
            if old is not None and key in pending.built:
                carry_state(old.scaler, pending.built[key].scaler)
            elif old is not None:
                log.warning("%s stopped scaling %s: the applied file has it no more (or nothing of it is evaluated)",
                            label(key), old.scaler.service)
        self.held = dict(pending.held)
        for key, entry in pending.built.items():
            self.entries[key] = entry
            if self._drive is not None:
                log.info("%s scales %s here (every %g s)%s", label(key), entry.scaler.service, entry.scaler.interval,
                         ", as edited" if key in pending.diff.changed else "")
                self._launch(entry)
        return stopped

    def start(self, drive: Callable[[LocalAutoscaler], Any]) -> None:
        """Drive every evaluator (and those later applies add) with `drive(scaler)`, a coroutine."""
        self._drive = drive
        for entry in self.entries.values():
            if entry.task is None:
                self._launch(entry)

    def _launch(self, entry: Entry) -> None:
        assert self._drive is not None
        entry.task = asyncio.create_task(self._drive(entry.scaler))
        entry.task.add_done_callback(lambda task: ended(entry.scaler, task))

    async def close(self) -> None:
        """Await every driver (they end with the run's stop event; one that crashed was said as it ended)."""
        tasks = [e.task for e in self.entries.values() if e.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def summary(self, pending: Pending) -> dict[str, list[str]]:
        """What an apply did to the autoscalers, for its response."""
        return {kind: [label(k) for k in keys] for kind, keys in
                (("added", pending.diff.added), ("changed", pending.diff.changed), ("removed", pending.diff.removed))
                if keys}

    def ownership_notes(self, pending: Pending, newly: set[str], replicas: Callable[[str], int]) -> list[str]:
        """An apply's notes on the services an autoscaler left: `newly` held by their adapter, or released
        (the callers' filter: those no planner owns either) to the manifest's count, `replicas(service)`."""
        held = [f"{s}: no autoscaler of the file scales it now; its replicas ({replicas(s)}) stay, owned by its "
                f"scaling adapter {autoscalers.ADAPTER_KIND} {pending.held[s]} (Dynamo's replica ownership model: "
                "the manifest's replicas do not set them); change them with /scale (python -m dynamo.deploy "
                f"scale URL {s}=N)" for s in sorted(newly)]
        return held + [f"{s}: no autoscaler of the file scales it now; the manifest's replicas ({replicas(s)}) "
                       "apply" for s in pending.released]


def ended(scaler: LocalAutoscaler, task: asyncio.Task) -> None:
    """A driver's end: one that crashed is said and marked in its status (`/status` lists its last evaluation)."""
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    scaler.last = {**scaler.last, "error": f"its evaluation stopped: {exc!r}"}
    log.error("%s: its evaluation of %s stopped: %r", scaler.label, scaler.service, exc, exc_info=exc)


def carry_state(old: LocalAutoscaler, new: LocalAutoscaler) -> None:
    """An edited autoscaler's history, kept as the controllers keep it per object (module docstring)."""
    new.governor.recommendations = list(old.governor.recommendations)
    new.governor.events = list(old.governor.events)
    new.started = old.started
    if old.keda is not None and new.keda is not None:
        new.keda.last_active = old.keda.last_active


def at_startup(sup: Any, documents: list[Any], graph: Graph, args: Any) -> GraphAutoscalers:
    """The graph's autoscalers as `run` starts (`args`: its --prometheus-endpoint, else $PROMETHEUS_ENDPOINT,
    and --hpa-sync-period); what of them cannot be evaluated is said once, like the file's other things `run`
    cannot honour; they are driven once `GraphAutoscalers.start` is called."""
    def sessions(service: str) -> list[int]:  # the processes a resource metric reads
        return [r.pid for (svc, _), r in sup.replicas.items() if svc == service and r.pid]

    prometheus = getattr(args, "prometheus_endpoint", None) or os.environ.get("PROMETHEUS_ENDPOINT") or None
    found = GraphAutoscalers(sessions, prometheus, getattr(args, "hpa_sync_period", local_autoscalers.HPA_SYNC_PERIOD))
    pending = found.prepare(documents, graph)
    for note in pending.notes:
        log.warning("%s", note)
    found.commit(pending)
    for scaler in found:
        log.info("%s scales %s/%s here (every %g s)", scaler.label, graph.metadata.name, scaler.service,
                 scaler.interval)
    return found

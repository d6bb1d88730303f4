"""`POST /apply` of a running `run`: a changed manifest rolled out as the operator's Deployments roll it
(`kubectl apply` of a DGD). Owns the diff of the running plans against the new ones and each service's
rollout; the supervisor owns the replicas (it starts, restarts and retires them).

Per service: the same spec is left alone (its replica count applied as `/scale` applies it, unless an
autoscaler or the graph's planner owns the count); a changed spec is replaced as its Deployment strategy
says (`rollout.py`'s annotations): RollingUpdate starts replicas of the new plan up to maxSurge above the
count and retires old ones as new ones become ready, keeping maxUnavailable at most unready; Recreate
retires them all, then starts the new ones. A frontend's replicas share its service's listening socket, which
`run` holds (`listeners.py`), so it surges like the rest; one that binds its fixed port itself (a KServe gRPC
frontend, a frontend run through a shell) is recreated: a second copy could not bind it. A rollout that makes no progress within its deadline (the
Deployment's progressDeadlineSeconds) stalls: the new replicas that are not ready are retired and the old
ones keep serving (and with none of the new plan ready, the service's plan is the old one again: a deliberate
difference, a Deployment only reports ProgressDeadlineExceeded and keeps trying). What the whole graph shares (its name, namespace, discovery) cannot change in place.

A new `spec.restart.id` is not a changed spec: `local_restart.py` decides which services it restarts and when
(Sequential: one service's rollout after another, in the operator's order; Parallel: all at once), and each
restart is a rollout of its own, as above."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dynamo.deploy import local_restart
from dynamo.deploy.local_restart import RESTARTING, Restarts
from dynamo.deploy.model import Graph
from dynamo.deploy.plan import ServicePlan
from dynamo.deploy.replica import Replica
from dynamo.deploy.rollout_steps import (ApplyRequest, Change, Halted, Refused, Strategy, fingerprint, refusal,
                                         scaled_value, step, strategy_for)
from dynamo.deploy.supervisor import Supervisor

__all__ = ["ApplyRequest", "Applier", "Change", "Halted", "Refused", "Rollout", "Strategy", "fingerprint", "refusal",
           "scaled_value", "step", "strategy_for"]

log = logging.getLogger("dynamo.deploy")
PROGRESS_DEADLINE = 600.0  # the Deployment's progressDeadlineSeconds default


# ----- one service's rollout ---------------------------------------------------------------------

@dataclass
class Rollout:
    service: str
    plan: ServicePlan  # the target
    previous: ServicePlan | None  # what most of the old replicas run (the stall falls back to it)
    generation: int
    deadline: float
    respec: bool = False  # for a changed pod template (not a restart): the operator's rolling update, for a worker
    state: str = "progressing"  # progressing | complete | stalled | superseded (by a later apply) | cancelled
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    task: asyncio.Task | None = None

    @property
    def strategy(self) -> Strategy:
        """Resolved against the target as it is now, as the controller resolves maxSurge / maxUnavailable at
        every sync: a /scale, an autoscaler or the planner may change the target mid-rollout."""
        return strategy_for(self.plan, self.plan.replicas, self.previous)

    def info(self) -> dict[str, Any]:
        took = (self.finished or time.monotonic()) - self.started
        strat = self.strategy
        return {"generation": self.generation, "state": self.state, "strategy": strat.kind,
                "max_surge": strat.max_surge, "max_unavailable": strat.max_unavailable,
                "message": self.message, "seconds": round(took, 1)}


def split(sup: Supervisor, ro: Rollout) -> tuple[list[Replica], list[Replica]]:
    reps = sup.active(ro.service)
    return [r for r in reps if r.plan is not ro.plan], [r for r in reps if r.plan is ro.plan]


def retire_order(old: list[Replica]) -> list[Replica]:
    """Unready old replicas first (retiring them costs no availability), then the highest-numbered."""
    return sorted(old, key=lambda r: (r.state == "ready", -r.index))


async def roll(sup: Supervisor, ro: Rollout) -> None:
    """Drive `ro` to completion or a stall; the supervisor leaves the service alone meanwhile (the Applier
    holds it for `ro` before this starts)."""
    try:
        if ro.strategy.kind == "Recreate":
            await _recreate(sup, ro)
        else:
            await _rolling(sup, ro)
    finally:
        sup.release(ro.service, ro)
        if ro.state == "progressing":  # a later apply marks it superseded before cancelling it
            ro.state = "cancelled"
            ro.message = "cancelled: the run is stopping"
        ro.finished = time.monotonic()


async def _rolling(sup: Supervisor, ro: Rollout) -> None:
    seen, progressed = None, time.monotonic()
    while not sup.halted():
        old, new = split(sup, ro)
        ready = sum(r.state == "ready" for r in new)
        target = ro.plan.replicas
        if not old and ready >= target:
            for rep in new[target:]:  # scaled down meanwhile
                sup.retire(rep)
            return _done(ro)
        now = time.monotonic()
        if (len(old), len(new), ready) != seen:
            seen, progressed = (len(old), len(new), ready), now
        elif now - progressed > ro.deadline:
            return _stall(sup, ro, new)
        start, retire = step(target, ro.strategy, len(old), sum(r.state == "ready" for r in old), len(new), ready)
        for rep in retire_order(old)[:retire]:
            sup.retire(rep)
        for _ in range(start):
            if await sup.add(ro.plan) is None:
                break  # deferred (a drainer holds its number or devices): Pending, the deadline runs on
        await asyncio.sleep(0.2)


async def _recreate(sup: Supervisor, ro: Rollout) -> None:
    old, _ = split(sup, ro)
    for rep in old:
        sup.retire(rep)
    if ro.strategy.note:
        log.warning("%s", ro.strategy.note)
    # The old ones are gone (and a fixed port is free) before a new one starts; their pod's grace bounds this.
    while any(r.service == ro.service and r.plan is not ro.plan for r in sup.replicas.values()) and not sup.halted():
        await asyncio.sleep(0.1)
    began = time.monotonic()
    while not sup.halted():
        _, new = split(sup, ro)
        if len(new) < ro.plan.replicas and await sup.add(ro.plan) is not None:
            continue
        if sum(r.state == "ready" for r in new) >= ro.plan.replicas:
            return _done(ro)
        if time.monotonic() - began > ro.deadline:
            ro.state, ro.message = "stalled", f"rollout stalled: {ro.service} not ready within {ro.deadline:g}s"
            log.warning("%s (recreated: there are no old replicas to fall back to)", ro.message)
            return
        await asyncio.sleep(0.2)


def _done(ro: Rollout) -> None:
    ro.state = "complete"
    ro.message = f"{ro.service} replaced ({ro.strategy.kind}) in {time.monotonic() - ro.started:.1f}s"
    log.info("rollout of generation %d: %s", ro.generation, ro.message)


def _stall(sup: Supervisor, ro: Rollout, new: list[Replica]) -> None:
    """No progress within the deadline: the new replicas that are not ready go, the old ones keep serving;
    with none of the new plan left ready, the service's plan is the old one again (a scale-up starts those).
    A Deployment would only say ProgressDeadlineExceeded and keep trying: this falls back on purpose."""
    for rep in new:
        if rep.state != "ready":
            sup.retire(rep)
    kept = any(r.state == "ready" for r in new)
    if not kept and ro.previous is not None and sup.plans.get(ro.service) is ro.plan:
        ro.previous.replicas = ro.plan.replicas
        sup.plans[ro.service] = ro.previous
    ro.state = "stalled"
    ro.message = (f"rollout stalled: a new {ro.service} replica made no progress to ready within "
                  f"{ro.deadline:g}s; the old replicas keep serving")
    log.warning("generation %d: %s", ro.generation, ro.message)


# ----- the graph's applies -----------------------------------------------------------------------

class Applier:
    """The applies of one graph: its generation, the diff of each against the running plans, the
    rollouts it starts (a later apply supersedes a rollout of a service it changes again); its `spec.restart`
    is `restarts`' (`local_restart.py`), which rolls services through `_roll`."""

    def __init__(self, sup: Supervisor, graph: Graph, deadline: float = PROGRESS_DEADLINE) -> None:
        self.sup, self.graph, self.deadline = sup, graph, deadline
        self.generation = 1
        self.rollouts: dict[str, Rollout] = {}
        self.restarts = Restarts(sup, self.rollouts, self._roll, self._most_run, local_restart.restart_id(graph))

    def apply(self, graph: Graph, plans: dict[str, ServicePlan], autoscaled: set[str],
              k8s_namespace: str | None, deadline: float | None = None) -> dict[str, Any]:
        """Diff `plans` (the new manifest's, built as at startup) against the running ones and act on it;
        Refused (nothing changed) for a graph-wide change. Everything is decided before anything changes, so
        an error leaves the running graph as it was. Returns what was done, per service."""
        sup = self.sup
        if sup.halted():
            raise Halted("the run is stopping")
        refused = refusal(self.graph, graph, sup.plans, plans, k8s_namespace)
        if refused is not None:
            raise refused
        notes: list[str] = []
        changes = {name: self._decide(name, new, name in autoscaled, notes) for name, new in plans.items()}
        removed = [n for n in sup.plans if n not in plans]
        mode, reworked = self.restarts.prepare(graph, changes, removed, plans)
        # ----- from here on, nothing raises
        self.generation += 1
        self.graph = graph
        done: dict[str, Any] = {"generation": self.generation, "unchanged": [], "scaled": {}, "replaced": {},
                                "added": [], "removed": removed, "notes": notes}
        for name in removed:
            self._remove(name)
        for name, change in changes.items():
            self._act(name, change, deadline or self.deadline, done)
        sup.plans.clear()
        sup.plans.update({name: change.plan for name, change in changes.items()})
        restart = self.restarts.start(mode, graph, reworked, self.generation, deadline or self.deadline)
        if restart is not None:
            done["restart"] = restart
        sup.nudge()
        for note in notes:
            log.warning("apply generation %d: %s", self.generation, note)
        log.info("apply generation %d: %s", self.generation, {k: v for k, v in done.items() if v and k != "notes"})
        return done

    def _decide(self, name: str, new: ServicePlan, autoscaled: bool, notes: list[str]) -> Change:
        running = self.sup.plans.get(name)
        if running is None:
            return Change("added", new, new.replicas)
        ro = self.rollouts.get(name)
        target = ro.plan if ro is not None and ro.state == "progressing" else running
        replicas = new.replicas
        if autoscaled:  # the autoscaler's (or planner's) count, not the manifest's
            if replicas != running.replicas:
                notes.append(f"{name}: its replicas are its autoscaler's: {running.replicas} kept, not "
                             f"the manifest's {replicas}")
            replicas = running.replicas
        if fingerprint(new) == fingerprint(target):
            left = self._most_run(name, running)
            if ro is not None and ro.state == "stalled" and left is not None:
                # a stalled rollout left replicas of the old plan beside the new one: the same spec again rolls on
                return Change("replaced", running, replicas, left, strategy_for(running, replicas, left), ro.respec)
            return Change("scaled" if replicas != running.replicas else "unchanged", running, replicas)
        previous = self._most_run(name, new) or running
        strat = strategy_for(new, replicas, previous)
        if strat.note:
            notes.append(strat.note)
        return Change("replaced", new, replicas, previous, strat, respec=True)

    def _most_run(self, name: str, besides: ServicePlan) -> ServicePlan | None:
        """The plan most of the service's replicas run, other than `besides` (None: none does). After a
        superseded rollout it is the old replicas' plan, not the half-rolled-out one the service targets."""
        others = [r.plan for r in self.sup.active(name) if r.plan is not None and r.plan is not besides]
        if not others:
            return None
        top = Counter(id(plan) for plan in others).most_common(1)[0][0]
        return next(plan for plan in others if id(plan) == top)

    def _act(self, name: str, change: Change, deadline: float, done: dict[str, Any]) -> None:
        change.plan.replicas = change.replicas
        ro = self.rollouts.get(name)
        if change.kind in ("added", "replaced"):
            change.plan.generation = self.generation
        if change.kind == "added":
            done["added"].append(name)
            return
        if change.kind != "replaced":
            if change.kind == "scaled":
                done["scaled"][name] = change.replicas
            else:
                done["unchanged"].append(name)
            if ro is not None and ro.state == "stalled":
                ro.state = "superseded"  # the spec applied again is what runs: the stall is over
            return
        change.plan.http_port = self.sup.plans[name].http_port  # a second frontend keeps the port it serves on
        ro = self._roll(name, change.plan, change.previous, self.generation, deadline, change.respec)
        done["replaced"][name] = change.strategy.kind if change.strategy else ro.strategy.kind

    def _roll(self, name: str, plan: ServicePlan, previous: ServicePlan | None, generation: int,
              deadline: float, respec: bool = False) -> Rollout:
        """Replace the service's replicas with `plan`'s, superseding a rollout of it in progress."""
        ro = self.rollouts.get(name)
        if ro is not None and ro.task is not None and not ro.task.done():
            ro.state = "superseded"
            ro.task.cancel()
        ro = Rollout(name, plan, previous, generation, deadline, respec)
        ro.task = asyncio.create_task(roll(self.sup, ro))
        self.sup.hold(name, ro, ro.task)
        self.rollouts[name] = ro
        return ro

    def _remove(self, name: str) -> None:
        ro = self.rollouts.pop(name, None)
        if ro is not None and ro.task is not None and not ro.task.done():
            ro.state = "superseded"
            ro.task.cancel()
        for rep in list(self.sup.replicas.values()):
            if rep.service == name:
                self.sup.retire(rep)

    def status(self) -> dict[str, Any]:
        """Per service: generation, target, updated (replicas of its current plan), ready among them, and the
        rollout's state: progressing, stalled, scaling (count not reached yet) or complete; the graph's
        `restart` (the operator's status.restart: observedID, phase, inProgress; `local_restart.py`). `done`:
        nothing progressing or scaling, and no restart under way."""
        out = {}
        for name, plan in self.sup.plans.items():
            ro = self.rollouts.get(name)
            reps = self.sup.active(name)
            # a stall that fell back runs the old plan again: counted against the applied one, as a Deployment's
            # updatedReplicas counts the new ReplicaSet's pods (0 here), the old ones as old
            applied = ro.plan if ro is not None and ro.state == "stalled" else plan
            updated = [r for r in reps if r.plan is applied]
            ready = sum(r.state == "ready" for r in updated)
            state = ro.state if ro is not None and ro.state in ("progressing", "stalled") else \
                "complete" if ready >= plan.replicas and len(reps) == plan.replicas else "scaling"
            out[name] = {"generation": ro.generation if ro else plan.generation, "replicas": plan.replicas,
                         "updated": len(updated), "ready": ready, "old": len(reps) - len(updated), "state": state,
                         **({"rollout": ro.info()} if ro is not None else {})}
        restart = self.restarts.status
        return {"generation": self.generation, "services": out,
                "done": all(s["state"] in ("complete", "stalled") for s in out.values())
                and (restart is None or restart.phase != RESTARTING),
                **({"restart": restart.info()} if restart is not None else {})}

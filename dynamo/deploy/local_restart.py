"""`spec.restart` under `run`'s apply: which services a new restart id restarts, in what order, and the graph's
restart status (the operator's `status.restart`). `local_rollout.py` owns each service's rollout; this module
(`Restarts`, one per Applier) owns the sequence of them, what is reported, and which id each service's pods
carry (`ServicePlan.restart_id`, stamped on each plan as the operator stamps it on the pod template).

As the operator's DGD controller does it (deploy/operator internal/controller: computeRestartStatus,
computeSequentialRestartStatus / computeParallelRestartStatus; internal/dynamo: DetermineRestartState,
GetRestartOrder, IsParallelRestart):

- A service's pods carry the restart id it was last restarted with (the operator's `nvidia.com/restartAt` on
  its pod template; here its plan's `restart_id`); a new `spec.restart.id` restarts the services whose pods carry
  another id. A rollout that stalls and falls back to the old plan falls back to the old id with it.
- `Sequential` (the default: no strategy, or no type) restarts them one at a time in `strategy.order`, else
  alphabetically; the next starts once the previous one's rollout is complete (every new replica ready, no old
  one left: the operator waits for the component to be Available on its latest generation). `Parallel`
  restarts them all at once. Each rollout follows its service's own Deployment strategy.
- A service whose spec changes otherwise in the same apply is rolled for that change at once, and, under
  `Sequential`, rolled again when its turn comes (the operator stamps the new id on a service's pods only at
  its turn); under `Parallel` its one rollout carries the new id too.
- An apply that also changes a *worker*'s pod template (not only its id), or comes while a worker's rollout for
  a changed pod template (an earlier apply's too) is still progressing, supersedes the restart (phase
  `Superseded`, nothing restarted for it): the operator's managed rolling update of the workers takes over.
  (The operator has no managed rolling update for a multinode graph; `run` refuses multinode services.)
- A restart id already processed (Completed, Failed, Superseded) is not restarted again by applying it again,
  and a graph without `spec.restart` restarts nothing (its last terminal status is kept). On Completed the
  operator stamps the id on every service (DetermineRestartState): here every service carries it by then (an
  order lists each service once, as `validate` and the operator's webhook require; one added meanwhile is born
  with it), so there is nothing left to stamp.
- Ours: a rollout in the sequence that stalls (its progress deadline) fails the restart (`Failed`, with a
  `message`): the services after it are not restarted (the operator defines Failed but keeps waiting). The id
  `run` starts with is the one every pod starts with: the first run of a file restarts nothing (status
  `Completed` for it), and a service an apply adds starts with the new id. Any later apply supersedes a
  sequence in progress (its task is cancelled); a service whose rollout already began keeps rolling, and the
  same id applied again goes on with the services not restarted yet. The run stopping mid-restart, or the
  sequence's task failing, fails it (`Failed`, with a `message`), so that `apply --wait` ends.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from dynamo.deploy.model import Graph
from dynamo.deploy.plan import ServicePlan
from dynamo.deploy.rollout_steps import Change, strategy_for
from dynamo.deploy.supervisor import Supervisor

log = logging.getLogger("dynamo.deploy")
RESTARTING, COMPLETED, FAILED, SUPERSEDED = "Restarting", "Completed", "Failed", "Superseded"
TERMINAL = (COMPLETED, FAILED, SUPERSEDED)
CANCELLED = "restart cancelled: the run is stopping"


def restart_id(graph: Graph) -> str | None:
    return graph.spec.restart.id if graph.spec.restart is not None and graph.spec.restart.id else None


def is_parallel(graph: Graph) -> bool:
    restart = graph.spec.restart
    return restart is not None and restart.strategy is not None and restart.strategy.type == "Parallel"


def restart_order(graph: Graph) -> list[str]:
    """The operator's GetRestartOrder: `strategy.order` when given, else the services alphabetically."""
    restart = graph.spec.restart
    given = restart.strategy.order if restart is not None and restart.strategy is not None else None
    return list(given) if given else sorted(graph.spec.services)


@dataclass
class RestartStatus:
    """The operator's `status.restart` (observedID, phase, inProgress), with the apply's generation that
    started it and, when it failed or was superseded, why."""

    observed_id: str
    phase: str
    in_progress: list[str] = field(default_factory=list)
    generation: int = 1
    parallel: bool = False
    message: str = ""

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"observedID": self.observed_id, "phase": self.phase, "inProgress": self.in_progress,
                               "generation": self.generation}
        return {**out, "message": self.message} if self.message else out


def decide(previous: RestartStatus | None, graph: Graph, reworked_workers: list[str]) -> str:
    """What an apply of `graph` does about its restart: `none` (no id, or one already processed), `superseded`
    (a worker's pod template changes too), else `parallel` or `sequential` (a new id, or one in progress)."""
    new_id = restart_id(graph)
    if new_id is None:
        return "none"
    if previous is not None and previous.observed_id == new_id and previous.phase in TERMINAL:
        return "none"
    if reworked_workers:
        return "superseded"
    return "parallel" if is_parallel(graph) else "sequential"


def kept(previous: RestartStatus | None) -> RestartStatus | None:
    """The status an apply that restarts nothing leaves: the last terminal one (the operator's, with no
    `spec.restart`, keeps only a terminal status); the same id already processed keeps its own."""
    return previous if previous is not None and previous.phase in TERMINAL else None


def parallel_progress(status: RestartStatus, states: dict[str, str]) -> RestartStatus:
    """A parallel restart as its services' rollouts stand (`states`: service -> rollout state): Completed once
    none is progressing; Failed when one stalled, or the run's stop cancelled one."""
    if status.phase != RESTARTING:
        return status
    stalled = sorted(n for n in status.in_progress if states.get(n) == "stalled")
    if stalled:
        return RestartStatus(status.observed_id, FAILED, [], status.generation, True,
                             f"restart failed: the rollout of {', '.join(stalled)} stalled")
    if any(states.get(n) == "cancelled" for n in status.in_progress):
        return RestartStatus(status.observed_id, FAILED, [], status.generation, True, CANCELLED)
    left = [n for n in status.in_progress if states.get(n) == "progressing"]
    return RestartStatus(status.observed_id, RESTARTING if left else COMPLETED, left, status.generation, True)


def twin(plan: ServicePlan, rid: str) -> ServicePlan:
    """Another plan of the same spec, carrying restart id `rid`, for a restart of replicas that already run
    `plan`: a rollout tells its new replicas from the old by their plan. Its own per-replica port tables; its
    device ledger is shared, as every plan of the service shares it."""
    out = copy.copy(plan)
    out.ports, out.kserve_ports = {}, {}
    out.restart_id = rid
    return out


def fail(status: RestartStatus, message: str) -> None:
    status.phase, status.in_progress, status.message = FAILED, [], message
    log.warning("restart %s: %s", status.observed_id, message)


# ----- the sequence --------------------------------------------------------------------------------

class RolloutLike(Protocol):
    """What this module reads of `local_rollout.Rollout`."""

    plan: ServicePlan
    state: str
    respec: bool
    task: asyncio.Task | None


@dataclass
class SequentialRestart:
    """One sequential restart: `start(service)` rolls a service whose pods carry another id (and returns its
    rollout; None: the service is gone or the run stops); `current(service)` is a rollout in progress of a
    service that already carries this id (None: none)."""

    status: RestartStatus
    order: list[str]
    start: Callable[[str], RolloutLike | None]
    current: Callable[[str], RolloutLike | None]
    carries: Callable[[str], bool]  # whether the service's pods carry this id already
    halted: Callable[[], bool]  # whether the run is stopping
    task: asyncio.Task | None = None

    def next_up(self) -> list[str]:
        """The service the walk waits for first ([]: none; it completes at once)."""
        first = next((n for n in self.order if not self.carries(n) or self.current(n) is not None), None)
        return [first] if first is not None else []

    def cancel(self) -> None:
        """A later apply took over: the status becomes that apply's; the rollout under way goes on."""
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def walk(seq: SequentialRestart) -> None:
    """Restart `seq.order` one service at a time; a stall fails the rest, and so does the run stopping."""
    status = seq.status
    for name in seq.order:
        ro = seq.current(name) if seq.carries(name) else seq.start(name)
        if ro is None or ro.task is None:
            if seq.halted():
                return fail(status, CANCELLED)
            continue  # carries the id already, nothing rolling (or the service is gone)
        status.in_progress = [name]
        # No deadline of its own: the rollout's progress deadline bounds it (a stall ends the rollout's task),
        # and the run's stop cancels both. Not `await ro.task`: cancelling the sequence must not cancel the rollout.
        await asyncio.wait({ro.task})
        if ro.state == "stalled":
            rest = seq.order[seq.order.index(name) + 1:]
            return fail(status, f"restart failed: the rollout of {name} stalled"
                        + (f"; not restarted: {', '.join(rest)}" if rest else ""))
        if ro.state == "cancelled":
            return fail(status, CANCELLED)
        if ro.state != "complete":  # superseded: the apply that did it owns the status now
            return
        log.info("restart %s: %s restarted", status.observed_id, name)
    status.phase, status.in_progress = COMPLETED, []
    log.info("restart %s completed (%s)", status.observed_id, ", ".join(seq.order))


# ----- the graph's restarts ------------------------------------------------------------------------

RollFn = Callable[[str, ServicePlan, "ServicePlan | None", int, float], RolloutLike]


class Restarts:
    """The restarts of one graph under `run`'s apply: the status reported (one writer at a time: the apply that
    starts it, then its sequence's task or its parallel rollouts' ends), the sequence in progress, and the id
    each plan carries. The Applier lends it its rollouts (read), `roll` (replace a service's replicas) and
    `most_run` (the plan most of a service's replicas run)."""

    def __init__(self, sup: Supervisor, rollouts: dict[str, RolloutLike], roll: RollFn,
                 most_run: Callable[[str, ServicePlan], ServicePlan | None], first: str | None) -> None:
        self.sup, self.rollouts, self._roll, self._most_run = sup, rollouts, roll, most_run
        for plan in sup.plans.values():
            plan.restart_id = first  # every pod starts with it: the first run restarts nothing
        self.status: RestartStatus | None = RestartStatus(first, COMPLETED) if first else None
        self.sequence: SequentialRestart | None = None

    def prepare(self, graph: Graph, changes: dict[str, Change], removed: list[str],
                plans: dict[str, ServicePlan]) -> tuple[str, list[str]]:
        """Before the apply changes anything (nothing here raises): what it does about its restart (`decide`)
        and the workers that supersede it; under Parallel, every service whose pods carry another id becomes
        `replaced`; each new plan gets the id its pods will carry (the graph's when added or under Parallel,
        else the running plan's)."""
        self.refresh()
        reworked = self._reworked_workers(changes, removed)
        mode, rid = decide(self.status, graph, reworked), restart_id(graph)
        if mode == "parallel":
            self._restart_all(changes, plans, rid)
        for name, change in changes.items():
            running = self.sup.plans.get(name)
            if change.plan is not running:
                change.plan.restart_id = rid if running is None or mode == "parallel" else running.restart_id
        return mode, reworked

    def refresh(self) -> None:
        """A Parallel restart as its rollouts stand: at each apply (before it decides) and as each ends."""
        if self.status is not None and self.status.parallel:
            self.status = parallel_progress(self.status, {n: r.state for n, r in self.rollouts.items()})

    def _reworked_workers(self, changes: dict[str, Change], removed: list[str]) -> list[str]:
        """The workers whose pod template this apply changes (not only the restart id), adds or removes, and
        those whose rollout for a changed pod template is still progressing (the operator supersedes a restart
        while its workers' managed rolling update is Pending or InProgress, whichever apply started it)."""
        def worker(plan: ServicePlan) -> bool:
            return plan.svc.componentType == "worker"
        out = {n for n, c in changes.items() if (c.kind == "added" or c.respec) and worker(c.plan)}
        out |= {n for n in removed if worker(self.sup.plans[n])}
        out |= {n for n, ro in self.rollouts.items() if ro.respec and ro.state == "progressing" and worker(ro.plan)}
        return sorted(out)

    def _restart_all(self, changes: dict[str, Change], plans: dict[str, ServicePlan], rid: str | None) -> None:
        """A Parallel restart: every service that keeps its running plan (unchanged, scaled, a stall rolled on)
        whose pods carry another id is replaced now, by its new plan (a changed spec has a new plan already)."""
        due = [n for n, c in changes.items() if c.plan is self.sup.plans.get(n) and c.plan.restart_id != rid]
        for name in due:
            new, replicas = plans[name], changes[name].replicas
            previous = self._most_run(name, new) or self.sup.plans[name]
            changes[name] = Change("replaced", new, replicas, previous, strategy_for(new, replicas, previous),
                                   changes[name].respec)

    def start(self, mode: str, graph: Graph, reworked: list[str], generation: int,
              deadline: float) -> dict[str, Any] | None:
        """The restart the apply leaves, once its changes are made (a later apply supersedes a sequence in
        progress: cancelled here); what it started (None: nothing), for the apply's answer."""
        if self.sequence is not None:
            self.sequence.cancel()
            self.sequence = None
        rid = restart_id(graph)
        if mode == "none" or rid is None:
            self.status = kept(self.status)
            return None
        parallel = is_parallel(graph)
        order = [n for n in restart_order(graph) if n in self.sup.plans]
        if mode == "superseded":
            self.status = RestartStatus(rid, SUPERSEDED, [], generation,
                                        message=f"superseded by the rolling update of {', '.join(reworked)}")
        elif mode == "parallel":
            self._start_parallel(rid, generation)
        else:
            self._start_sequence(rid, order, generation, deadline)
        assert self.status is not None
        log.info("apply generation %d: restart %s %s (%s)", generation, rid, self.status.phase,
                 "Parallel" if parallel else "Sequential")
        # the operator forbids an order with Parallel: there is none to show
        return {**self.status.info(), **({"strategy": "Parallel"} if parallel else
                                         {"strategy": "Sequential", "order": order})}

    def _start_parallel(self, rid: str, generation: int) -> None:
        rolling = sorted(n for n, ro in self.rollouts.items() if ro.state == "progressing" and n in self.sup.plans)
        self.status = RestartStatus(rid, RESTARTING, rolling, generation, parallel=True)
        for name in rolling:
            task = self.rollouts[name].task
            if task is not None:
                task.add_done_callback(lambda _task: self.refresh())
        self.refresh()  # nothing rolling: Completed at once

    def _start_sequence(self, rid: str, order: list[str], generation: int, deadline: float) -> None:
        def carries(name: str) -> bool:
            plan = self.sup.plans.get(name)
            return plan is not None and plan.restart_id == rid

        seq = SequentialRestart(RestartStatus(rid, RESTARTING, [], generation), order,
                                lambda n: self._restart_one(n, rid, generation, deadline), self._progressing,
                                carries, self.sup.halted)
        seq.status.in_progress = seq.next_up()
        self.status, self.sequence = seq.status, seq
        seq.task = asyncio.create_task(walk(seq))
        self.sup.owned.add(seq.task)  # it starts rollouts: cancelled before shutdown, as they are
        seq.task.add_done_callback(functools.partial(self._ended, seq))

    def _ended(self, seq: SequentialRestart, task: asyncio.Task) -> None:
        """The sequence's task is over: cancelled by a later apply (its status is left as it was), by the run
        stopping (Failed: cancelled), or failed (logged; Failed with the error), else it set its own phase."""
        self.sup.owned.discard(task)
        if task.cancelled():
            if seq.halted() and seq.status.phase == RESTARTING:
                fail(seq.status, CANCELLED)
            return
        exc = task.exception()
        if exc is not None:
            log.error("restart %s: its sequence failed", seq.status.observed_id, exc_info=exc)
            fail(seq.status, f"restart failed: {type(exc).__name__}: {exc}")

    def _restart_one(self, name: str, rid: str, generation: int, deadline: float) -> RolloutLike | None:
        """A sequence's turn for `name`: its replicas replaced by another plan of its current spec, carrying
        `rid` (a stall that falls back to the old plan falls back to its old id)."""
        running = self.sup.plans.get(name)
        if running is None or self.sup.halted():
            return None
        plan = twin(running, rid)
        plan.generation = generation
        self.sup.plans[name] = plan
        return self._roll(name, plan, self._most_run(name, plan) or running, generation, deadline)

    def _progressing(self, name: str) -> RolloutLike | None:
        ro = self.rollouts.get(name)
        return ro if ro is not None and ro.state == "progressing" else None

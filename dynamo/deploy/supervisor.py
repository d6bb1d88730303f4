"""Supervised replicas: each one is a child process in its own process group, with
prefixed output, the kubelet's probes (`probes.py`), restart with exponential backoff when it exits
or fails its liveness probe, and a shutdown that signals whole process groups and reaps every child
(no orphans).

States: starting -> live (the startup probe, else liveness, passed) -> ready (readiness probe);
unhealthy (liveness failing; at failureThreshold it is killed, SIGKILL after the pod's grace, and
restarted); exited -> backoff -> starting; stopping -> stopped. A replica retired by a scale-down gets
the pod's terminationGracePeriodSeconds (the manifest's, else the operator's 60) to drain, without
holding up the rest of the graph.

Each replica belongs to the plan it was started from (restarts use it, so an old replica mid-rollout
comes back as it was); a service is brought to its count of replicas, retiring the highest-numbered and
starting at the lowest free numbers, unless a rollout (`local_rollout.py`) holds it. A frontend that binds its
port itself, or a GPU service with no device free, starts no replica while one of its replicas drains
(`deferred`); a replica retired while its process is being spawned is stopped once the spawn ends (never left
running untracked). A frontend service's listening socket is bound here, once, and inherited by each of its
replicas (`listeners.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import sys
import time
from typing import IO, Any

from dynamo.deploy.contract import TERMINATION_GRACE_SECONDS
from dynamo.deploy.frontend_socket import planned_address
from dynamo.deploy.group_guard import GroupGuard, signal_group
from dynamo.deploy.listeners import Listeners, OwnPortTaken, Spawn
from dynamo.deploy.log_files import LogRotation, RotatingLog
from dynamo.deploy.plan import ServicePlan
from dynamo.deploy.replica import Replica
from dynamo.deploy.replica_probes import ReplicaProbes
from dynamo.deploy.replica_probes import terminate as _terminate

log = logging.getLogger("dynamo.deploy")

BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a replica that ran this long restarts without backoff
# Replicas per service on this one machine. Every replica is a process (a Python engine: ~0.1-1 GB and a
# core while it starts); past this a request is a typo or a runaway autoscaler, and accepting it would
# fork processes until the machine gives out. A cluster deployment has no such bound (render).
MAX_REPLICAS = 64


def check_replicas(service: str, replicas: int) -> None:
    """ValueError unless 0 <= replicas <= MAX_REPLICAS (the control endpoint's 400, run's exit 2)."""
    if replicas < 0:
        raise ValueError(f"{service}: replicas must be >= 0, got {replicas}")
    if replicas > MAX_REPLICAS:
        raise ValueError(f"{service}: replicas {replicas} is more than run's limit of {MAX_REPLICAS} per service "
                         "on one machine (render the graph for a cluster)")


def _die_with_parent() -> None:  # runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, plans: dict[str, ServicePlan], out: IO[str] | None = None, log_dir: str | None = None,
                 grace: float = 15.0, label: str = "", leftovers: tuple[str, ...] = (),
                 log_rotation: LogRotation | None = None) -> None:
        self.plans = plans
        self.label = label  # the graph's name when a file runs several (its replicas' lines and logs carry it)
        self.out = out or sys.stdout
        self.log_dir, self.log_rotation = log_dir, log_rotation or LogRotation()
        self.grace = grace
        self.replicas: dict[tuple[str, int], Replica] = {}
        self.stopping = False
        self.version = 0  # bumped on every state change (the status table watches it)
        self._scale_requested = asyncio.Event()
        self._stop: asyncio.Event | None = None  # run()'s: a scale-up in progress checks it between starts
        self._retiring: set[asyncio.Task] = set()  # scaled-down replicas draining within their pod's grace
        self.held: dict[str, object] = {}  # service -> the rollout that owns its replicas (reconcile leaves them)
        self.owned: set[asyncio.Task] = set()  # work that starts replicas (rollouts): cancelled before shutdown
        # Stops the replicas' groups, and removes `leftovers` (run's temporary dirs), if this process dies unannounced.
        self.guard = GroupGuard(grace, leftovers)
        self.probes = ReplicaProbes(self)
        self.listeners = Listeners()  # the frontend services' sockets, held for the run's life

    def tag(self, rep: "Replica") -> str:
        return f"{self.label}/{rep.name}" if self.label else rep.name

    def touch(self) -> None:
        """Say the status changed (the status table reprints): also for what others show in it (adapters)."""
        self.version += 1

    _touch = touch  # the name replica_probes.py calls it by

    # ----- desired state --------------------------------------------------------------

    def scale(self, service: str, replicas: int) -> None:
        if service not in self.plans:
            raise KeyError(f"no service {service!r} (have {', '.join(self.plans) or 'none'}; names are case-sensitive)")
        check_replicas(service, replicas)
        self.plans[service].replicas = replicas
        log.info("scale %s to %d replica(s)", service, replicas)
        self.nudge()

    def nudge(self) -> None:
        """Reconcile at the run loop's next turn."""
        self._scale_requested.set()

    def status(self) -> list[dict[str, Any]]:
        return [r.info() for _, r in sorted(self.replicas.items())]

    def halted(self) -> bool:
        return self.stopping or (self._stop is not None and self._stop.is_set())

    async def reconcile(self) -> None:
        """Bring every service to its target. The target is read again before each start, and the loop
        yields after each, so a newer scale request or a stop (SIGTERM, Ctrl-C) ends a scale-up at the
        next replica instead of after all of them; the run loop then reconciles again (retiring extras)."""
        for name, plan in list(self.plans.items()):
            if self.halted():
                return
            if name in self.held:
                continue
            for rep in self.excess(name):  # drains in the background: a pod's grace holds up nothing else
                self.retire(rep)
            while (len(self.active(name)) < plan.replicas and not self.halted() and name not in self.held
                   and self.plans.get(name) is plan):
                if await self.add(plan) is None:
                    break  # deferred (a retirement's nudge comes back) or halted
                await asyncio.sleep(0)  # let the control endpoint and the signal handlers run

    def active(self, service: str) -> list[Replica]:
        """The service's replicas not being retired, by number."""
        return [r for (svc, _), r in sorted(self.replicas.items()) if svc == service and not r.stopping]

    def excess(self, service: str) -> list[Replica]:
        plan = self.plans.get(service)
        return self.active(service)[plan.replicas if plan else 0:]

    async def add(self, plan: ServicePlan) -> Replica | None:
        """Start one replica of `plan` at the lowest free number (a slot still draining is not free); None when
        halted or deferred (`deferred`): the retirement's nudge, or the rollout's next turn, tries again."""
        if self.halted() or self.deferred(plan):
            return None
        index = next(i for i in itertools.count() if (plan.name, i) not in self.replicas)
        rep = Replica(plan.name, index, plan.launch(index), plan=plan, generation=plan.generation)
        await self._start(rep)
        return rep

    def deferred(self, plan: ServicePlan) -> bool:
        """Whether a new replica of `plan` waits for one of its service's draining replicas to go. It would take
        the next free number, and a number carries things: only number 0 of a frontend that binds its port itself
        listens on --frontend-port, and a GPU replica beside a drainer would share a device that is still busy (a
        slot keeps its devices across restarts). So such a frontend waits for its drainers, and a GPU service too
        unless its GPUs are free; a frontend inheriting its service's socket does not (every replica serves on
        it). (A Pod has no number: the cluster has neither problem.)"""
        if not any(r.stopping for (svc, _), r in self.replicas.items() if svc == plan.name):
            return False
        if plan.frontend and planned_address(plan) is None:  # binds its port itself
            return True
        return bool(plan.gpus and plan.devices is not None and plan.devices.free() < plan.gpus)

    def hold(self, service: str, owner: object, task: asyncio.Task | None = None) -> None:
        """`owner` (a rollout) owns the service's replicas: reconcile leaves them; `task` is cancelled before
        shutdown (nothing may start a replica once it has begun)."""
        self.held[service] = owner
        if task is not None:
            self.owned.add(task)
            task.add_done_callback(self.owned.discard)

    def release(self, service: str, owner: object) -> None:
        """`owner` lets go of the service (if it still holds it): reconcile brings it to its count again."""
        if self.held.get(service) is owner:
            del self.held[service]
            self.nudge()

    def retire(self, rep: Replica) -> None:
        """Drain `rep` in the background, within its pod's grace."""
        if rep.stopping:
            return
        rep.stopping = True
        task = asyncio.create_task(self._retire(rep))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # ----- one replica ----------------------------------------------------------------

    async def _start(self, rep: Replica) -> None:
        key = (rep.service, rep.index)
        self.replicas[key] = rep
        rep.state, rep.exit_code, rep.started = "starting", None, time.monotonic()
        try:
            spawn = self._spawn(rep)  # a frontend's sockets: bound first
            rep.proc = await asyncio.create_subprocess_exec(
                *spawn.argv, env=spawn.env, cwd=rep.launch.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                pass_fds=spawn.pass_fds, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            self.listeners.release_own(rep.service, rep.index)
            self._print(f"[{self.tag(rep)}] cannot start {rep.launch.argv[0]}: {exc}")
            rep.state, rep.exit_code = "exited", 127
            self._schedule_restart(rep)
            return
        except asyncio.CancelledError:  # asyncio kills a process it spawned but could not hand over
            if self.replicas.get(key) is rep:
                self.replicas.pop(key)
            raise
        finally:
            rep.spawned.set()
        self.guard.add(rep.proc.pid)  # its own session: the pid is the group id
        if rep.stopping or self.stopping:  # retired or shut down while it was being spawned: stop it now
            await self._stop_unstarted(rep, rep.proc)
            return
        rep.tasks = [asyncio.create_task(self._pump(rep, rep.proc)), asyncio.create_task(self._watch(rep, rep.proc)),
                     asyncio.create_task(self.probes.run(rep, rep.proc))]
        self.touch()

    def _spawn(self, rep: Replica) -> Spawn:
        """How `rep` is started (`Listeners.spawn`); a frontend whose own port another process took while it was
        down gets a fresh one (its probes, status and registry follow its new launch)."""
        try:
            return self.listeners.spawn(rep.service, rep.index, rep.launch)
        except OwnPortTaken:
            plan = rep.plan or self.plans[rep.service]
            was = rep.launch.http_port
            rep.launch = plan.move_own_port(rep.index)
            self._print(f"[{self.tag(rep)}] port {was} is taken by another process: its own port is "
                        f"{rep.launch.http_port} now")
            return self.listeners.spawn(rep.service, rep.index, rep.launch)

    async def _stop_unstarted(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        """A process whose replica was retired mid-spawn: it has done nothing worth a drain."""
        await _terminate(proc, self.grace)
        self.guard.remove(proc.pid)
        self.listeners.release_own(rep.service, rep.index)
        rep.exit_code, rep.state = proc.returncode, "stopped"
        self.touch()

    async def _pump(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        sink = RotatingLog(os.path.join(self.log_dir, f"{self.tag(rep).replace('/', '-')}.log"),
                           self.log_rotation) if self.log_dir else None
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                self._print(f"[{self.tag(rep)}] {line.decode(errors='replace').rstrip()}")
                if sink:
                    sink.write(line)
        finally:
            if sink:
                sink.close()

    async def _watch(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        rep.exit_code = code
        signal_group(proc.pid, signal.SIGKILL)  # leftovers of a crashed shell pipeline
        self.guard.remove(proc.pid)
        self.listeners.release_own(rep.service, rep.index)  # no process serves its own port: it refuses now
        if rep.stopping or self.stopping:
            rep.state = "stopped"
        else:
            rep.state = "exited"
            self._print(f"[{self.tag(rep)}] exited with code {code}")
            self._schedule_restart(rep)
        self.touch()

    def _schedule_restart(self, rep: Replica) -> None:
        ran = time.monotonic() - rep.started
        rep.failures = 0 if ran >= STABLE_AFTER else rep.failures + 1
        delay = min(BACKOFF_MAX, 2.0 ** max(rep.failures - 1, 0)) if rep.failures else 0.5
        rep.restart_at = time.monotonic() + delay
        rep.state = "backoff"
        self._print(f"[{self.tag(rep)}] restarting in {delay:.1f}s")

    async def _restart_due(self) -> None:
        now = time.monotonic()
        for rep in list(self.replicas.values()):
            if rep.state == "backoff" and now >= rep.restart_at and not rep.stopping and not self.halted():
                if rep.service not in self.held and rep in self.excess(rep.service):
                    self.retire(rep)  # scaled down (or removed) meanwhile
                    continue
                plan = rep.plan or self.plans[rep.service]
                restarted = Replica(rep.service, rep.index, plan.launch(rep.index), plan=plan,
                                    restarts=rep.restarts + 1, failures=rep.failures, generation=rep.generation)
                await self._start(restarted)

    # ----- retirement -----------------------------------------------------------------

    async def _retire(self, rep: Replica) -> None:
        """A replica scaled down: SIGTERM, SIGKILL after its pod's grace (its drain's bound, as the kubelet's)."""
        rep.stopping = True
        rep.state = "stopping"
        self.touch()
        with contextlib.suppress(asyncio.TimeoutError):  # `_start` sets it in a finally: the bound is a backstop
            await asyncio.wait_for(rep.spawned.wait(), 60)
        # Its process (spawned by now, if at all) holds the only copy of its own port left: it refuses once gone.
        self.listeners.release_own(rep.service, rep.index)
        if rep.proc is not None and rep.proc.returncode is None:
            await _terminate(rep.proc, self.pod_grace(rep.service, rep.plan))
        await self._drain_tasks(rep)
        if self.replicas.get((rep.service, rep.index)) is rep:
            self.replicas.pop((rep.service, rep.index))
            (rep.plan or self.plans[rep.service]).release(rep.index)
            # a frontend's sockets no replica needs any more (scaled to 0, removed, replaced): closed, refusing
            self.listeners.keep((r.service, r.index, r.launch) for r in self.replicas.values())
        self.touch()
        self.nudge()  # its slot is free: a newer target may want it again

    def pod_grace(self, service: str, plan: ServicePlan | None = None) -> float:
        """The pod's terminationGracePeriodSeconds: the manifest's, else the operator's 60. (`--grace` bounds
        the whole run's shutdown instead.)"""
        pod = (plan or self.plans[service]).svc.extraPodSpec
        given = pod.terminationGracePeriodSeconds if pod is not None else None
        return float(given) if given is not None else float(TERMINATION_GRACE_SECONDS)

    async def _drain_tasks(self, rep: Replica) -> None:
        for task in rep.tasks:
            if not task.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 5)
                task.cancel()
        await asyncio.gather(*rep.tasks, return_exceptions=True)

    # ----- whole graph ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.guard.start()
        try:
            await self.reconcile()
            while not stop.is_set():
                await self._restart_due()
                if self._scale_requested.is_set():
                    self._scale_requested.clear()
                    await self.reconcile()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            for task in list(self.owned):  # nothing may start a replica once shutdown has begun
                task.cancel()
            await asyncio.gather(*self.owned, return_exceptions=True)
            await self.shutdown()
            await asyncio.to_thread(self.guard.close)

    async def shutdown(self) -> None:
        self.stopping = True
        reps = list(self.replicas.values())
        for rep in reps:
            rep.stopping = True
            rep.state = "stopping"
        await asyncio.gather(*(_terminate(r.proc, self.grace) for r in reps if r.proc is not None))
        await asyncio.gather(*list(self._retiring), return_exceptions=True)  # their processes are gone now
        for rep in reps:
            await self._drain_tasks(rep)
            rep.state = "stopped"
        self.listeners.close()  # no replica is left to serve on them

    def _print(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass

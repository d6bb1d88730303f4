"""Supervised replicas: each one is a child process in its own process group, with
prefixed output, the kubelet's probes (`probes.py`), restart with exponential backoff when it exits
or fails its liveness probe, and a shutdown that signals whole process groups and reaps every child
(no orphans).

States: starting -> live (the startup probe, else liveness, passed) -> ready (readiness probe);
unhealthy (liveness failing; at failureThreshold it is killed, SIGKILL after the pod's grace, and
restarted); exited -> backoff -> starting; stopping -> stopped. A replica retired by a scale-down gets
the pod's terminationGracePeriodSeconds (the manifest's, else the operator's 60) to drain, without
holding up the rest of the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from dynamo.deploy import probes
from dynamo.deploy.contract import TERMINATION_GRACE_SECONDS
from dynamo.deploy.group_guard import GroupGuard, signal_group
from dynamo.deploy.plan import Launch, ServicePlan

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


@dataclass
class Replica:
    service: str
    index: int
    launch: Launch
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

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def info(self) -> dict[str, Any]:
        return {"service": self.service, "replica": self.index, "pid": self.pid, "state": self.state,
                "http_port": self.launch.http_port, "system_port": self.launch.system_port,
                "restarts": self.restarts, "exit_code": self.exit_code,
                "uptime_s": round(time.monotonic() - self.started, 1) if self.proc and self.started else 0.0}


class Supervisor:
    def __init__(self, plans: dict[str, ServicePlan], out: IO[str] | None = None, log_dir: str | None = None,
                 grace: float = 15.0, label: str = "", leftovers: tuple[str, ...] = ()) -> None:
        self.plans = plans
        self.label = label  # the graph's name when a file runs several (its replicas' lines and logs carry it)
        self.out = out or sys.stdout
        self.log_dir = log_dir
        self.grace = grace
        self.replicas: dict[tuple[str, int], Replica] = {}
        self.stopping = False
        self.version = 0  # bumped on every state change (the status table watches it)
        self._scale_requested = asyncio.Event()
        self._stop: asyncio.Event | None = None  # run()'s: a scale-up in progress checks it between starts
        self._retiring: set[asyncio.Task] = set()  # scaled-down replicas draining within their pod's grace
        # Stops the replicas' groups, and removes `leftovers` (run's temporary dirs), if this process dies unannounced.
        self.guard = GroupGuard(grace, leftovers)

    def tag(self, rep: "Replica") -> str:
        return f"{self.label}/{rep.name}" if self.label else rep.name

    def _touch(self) -> None:
        self.version += 1

    # ----- desired state --------------------------------------------------------------

    def scale(self, service: str, replicas: int) -> None:
        if service not in self.plans:
            raise KeyError(f"no service {service!r}")
        check_replicas(service, replicas)
        self.plans[service].replicas = replicas
        log.info("scale %s to %d replica(s)", service, replicas)
        self._scale_requested.set()

    def status(self) -> list[dict[str, Any]]:
        return [r.info() for _, r in sorted(self.replicas.items())]

    def halted(self) -> bool:
        return self.stopping or (self._stop is not None and self._stop.is_set())

    async def reconcile(self) -> None:
        """Bring every service to its target. The target is read again before each start, and the loop
        yields after each, so a newer scale request or a stop (SIGTERM, Ctrl-C) ends a scale-up at the
        next replica instead of after all of them; the run loop then reconciles again (retiring extras)."""
        for name, plan in self.plans.items():
            if self.halted():
                return
            for rep in [r for (svc, i), r in self.replicas.items() if svc == name and i >= plan.replicas]:
                if not rep.stopping:  # drains in the background: a pod's grace holds up nothing else
                    task = asyncio.create_task(self._retire(rep))
                    self._retiring.add(task)
                    task.add_done_callback(self._retiring.discard)
            index = 0
            while index < plan.replicas and not self.halted():
                if (name, index) not in self.replicas:  # a slot still draining is taken again once it is free
                    await self._start(Replica(name, index, plan.launch(index)))
                    await asyncio.sleep(0)  # let the control endpoint and the signal handlers run
                index += 1

    # ----- one replica ----------------------------------------------------------------

    async def _start(self, rep: Replica) -> None:
        self.replicas[(rep.service, rep.index)] = rep
        rep.state, rep.exit_code, rep.started = "starting", None, time.monotonic()
        try:
            rep.proc = await asyncio.create_subprocess_exec(
                *rep.launch.argv, env=rep.launch.env, cwd=rep.launch.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            self._print(f"[{self.tag(rep)}] cannot start {rep.launch.argv[0]}: {exc}")
            rep.state, rep.exit_code = "exited", 127
            self._schedule_restart(rep)
            return
        self.guard.add(rep.proc.pid)  # its own session: the pid is the group id
        rep.tasks = [asyncio.create_task(self._pump(rep, rep.proc)), asyncio.create_task(self._watch(rep, rep.proc)),
                     asyncio.create_task(self._probe(rep, rep.proc))]
        self._touch()

    async def _pump(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        sink = open(os.path.join(self.log_dir, f"{self.tag(rep).replace('/', '-')}.log"), "ab") if self.log_dir else None
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                self._print(f"[{self.tag(rep)}] {line.decode(errors='replace').rstrip()}")
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink:
                sink.close()

    async def _watch(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        rep.exit_code = code
        signal_group(proc.pid, signal.SIGKILL)  # leftovers of a crashed shell pipeline
        self.guard.remove(proc.pid)
        if rep.stopping or self.stopping:
            rep.state = "stopped"
        else:
            rep.state = "exited"
            self._print(f"[{self.tag(rep)}] exited with code {code}")
            self._schedule_restart(rep)
        self._touch()

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
            if rep.state == "backoff" and now >= rep.restart_at and not self.halted():
                plan = self.plans[rep.service]
                if rep.index >= plan.replicas:
                    self.replicas.pop((rep.service, rep.index), None)
                    plan.release(rep.index)
                    continue
                restarted = Replica(rep.service, rep.index, plan.launch(rep.index), restarts=rep.restarts + 1,
                                    failures=rep.failures)
                await self._start(restarted)

    # ----- the kubelet's probes --------------------------------------------------------

    async def _probe(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        """The startup probe (else liveness) until it first passes, then liveness and readiness side by side,
        as the kubelet runs them (`probes.py` counts the results)."""
        if not await self._until_passed(rep, proc, "startup" if "startup" in rep.launch.probes else "liveness"):
            return
        rep.live = True
        self._show(rep)
        await asyncio.gather(self._liveness(rep, proc), self._readiness(rep, proc))

    async def _until_passed(self, rep: Replica, proc: asyncio.subprocess.Process, kind: str) -> bool:
        """Check the `kind` probe every second until it passes; False when the process ends first, or when
        failureThreshold counted failures get it killed (a startup probe that never passes restarts it too)."""
        probe = rep.launch.probes.get(kind)
        counter = probes.Counter(probes.Timing.of(probe or {}), rep.started)
        while self._running(rep, proc):
            if await self._check(rep, probe):
                return self._running(rep, proc)
            if counter.failed(time.monotonic()):
                await self._kill_unhealthy(rep, proc, kind, counter)
                return False
            await asyncio.sleep(probes.EAGER)
        return False

    async def _liveness(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        probe = rep.launch.probes.get("liveness")
        if probe is None:
            return
        timing = probes.Timing.of(probe)
        counter = probes.Counter(timing, rep.started)
        delay = max(timing.period, rep.started + timing.initial_delay - time.monotonic())
        while True:
            await asyncio.sleep(delay)
            ok = self._running(rep, proc) and await self._check(rep, probe)
            if not self._running(rep, proc):
                return
            if ok:
                counter.passed()
            elif counter.failed(time.monotonic()):
                await self._kill_unhealthy(rep, proc, "liveness", counter)
                return
            rep.unhealthy = counter.failures > 0
            self._show(rep)
            delay = timing.period

    async def _readiness(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
        """Ready once the probe passes (checked every second until then); unready after failureThreshold
        counted failures in a row. No readiness probe: ready once live."""
        probe = rep.launch.probes.get("readiness")
        timing = probes.Timing.of(probe or {})
        counter = probes.Counter(timing, rep.started)
        while self._running(rep, proc):
            ok = await self._check(rep, probe)
            if not self._running(rep, proc):
                return
            if ok and counter.passed():
                rep.ready = True
            elif not ok and counter.failed(time.monotonic()):
                rep.ready = False
            self._show(rep)
            if probe is None:
                return
            await asyncio.sleep(timing.period if rep.ready else probes.EAGER)

    async def _check(self, rep: Replica, probe: dict[str, Any] | None) -> bool:
        plan = self.plans[rep.service]
        return await probes.check(probe, lambda port: plan.map_probe_port(port, rep.launch), rep.launch.env,
                                  rep.launch.cwd)

    async def _kill_unhealthy(self, rep: Replica, proc: asyncio.subprocess.Process, kind: str,
                              counter: probes.Counter) -> None:
        """What the kubelet does to a container failing its liveness (or startup) probe: SIGTERM, SIGKILL after
        the probe's terminationGracePeriodSeconds, else the pod's; `_watch` then restarts it with backoff."""
        rep.unhealthy = True
        self._show(rep)
        grace = counter.timing.grace if counter.timing.grace is not None else self.pod_grace(rep.service)
        self._print(f"[{self.tag(rep)}] {kind} probe failed {counter.failures} time(s) in a row: killing it to "
                    f"restart it (SIGTERM, SIGKILL after {grace:g}s)")
        await _terminate(proc, grace)

    @staticmethod
    def _running(rep: Replica, proc: asyncio.subprocess.Process) -> bool:
        return proc.returncode is None and not rep.stopping

    def _show(self, rep: Replica) -> None:
        state = "unhealthy" if rep.unhealthy else "ready" if rep.ready else "live" if rep.live else "starting"
        if rep.proc is not None and self._running(rep, rep.proc) and state != rep.state:
            rep.state = state
            self._touch()

    # ----- retirement -----------------------------------------------------------------

    async def _retire(self, rep: Replica) -> None:
        """A replica scaled down: SIGTERM, SIGKILL after its pod's grace (its drain's bound, as the kubelet's)."""
        rep.stopping = True
        rep.state = "stopping"
        self._touch()
        if rep.proc is not None and rep.proc.returncode is None:
            await _terminate(rep.proc, self.pod_grace(rep.service))
        await self._drain_tasks(rep)
        if self.replicas.get((rep.service, rep.index)) is rep:
            self.replicas.pop((rep.service, rep.index))
            self.plans[rep.service].release(rep.index)
        self._touch()
        self._scale_requested.set()  # its slot is free: a newer target may want it again

    def pod_grace(self, service: str) -> float:
        """The pod's terminationGracePeriodSeconds: the manifest's, else the operator's 60. (`--grace` bounds
        the whole run's shutdown instead.)"""
        pod = self.plans[service].svc.extraPodSpec
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

    def _print(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace`, and reap the leader."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        log.warning("pid %d did not stop within %.0fs: killing its process group", proc.pid, grace)
    signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()

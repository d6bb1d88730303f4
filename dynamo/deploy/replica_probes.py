"""The kubelet's probes of one supervised replica (`supervisor.py` starts them with its process): the startup
probe (else liveness) until it first passes, then liveness and readiness side by side, `probes.py` counting the
results; they move the replica through starting -> live -> ready / unhealthy, and a container failing its
liveness (or startup) probe is killed for the supervisor to restart."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING, Any

from dynamo.deploy import probes
from dynamo.deploy.group_guard import signal_group
from dynamo.deploy.replica import Replica

if TYPE_CHECKING:
    from dynamo.deploy.supervisor import Supervisor

log = logging.getLogger("dynamo.deploy")


class ReplicaProbes:
    """The probes of the supervisor's replicas (one `run` task per replica process)."""

    def __init__(self, sup: "Supervisor") -> None:
        self.sup = sup

    async def run(self, rep: Replica, proc: asyncio.subprocess.Process) -> None:
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
        plan = rep.plan or self.sup.plans[rep.service]
        return await probes.check(probe, lambda port: plan.map_probe_port(port, rep.launch), rep.launch.env,
                                  rep.launch.cwd)

    async def _kill_unhealthy(self, rep: Replica, proc: asyncio.subprocess.Process, kind: str,
                              counter: probes.Counter) -> None:
        """What the kubelet does to a container failing its liveness (or startup) probe: SIGTERM, SIGKILL after
        the probe's terminationGracePeriodSeconds, else the pod's; `_watch` then restarts it with backoff."""
        rep.unhealthy = True
        self._show(rep)
        grace = counter.timing.grace if counter.timing.grace is not None else self.sup.pod_grace(rep.service, rep.plan)
        self.sup._print(f"[{self.sup.tag(rep)}] {kind} probe failed {counter.failures} time(s) in a row: killing it to "
                    f"restart it (SIGTERM, SIGKILL after {grace:g}s)")
        await terminate(proc, grace)

    @staticmethod
    def _running(rep: Replica, proc: asyncio.subprocess.Process) -> bool:
        return proc.returncode is None and not rep.stopping

    def _show(self, rep: Replica) -> None:
        state = "unhealthy" if rep.unhealthy else "ready" if rep.ready else "live" if rep.live else "starting"
        if rep.proc is not None and self._running(rep, rep.proc) and state != rep.state:
            rep.state = state
            self.sup._touch()


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace`, and reap the leader."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except asyncio.TimeoutError:
        log.warning("pid %d did not stop within %.0fs: killing its process group", proc.pid, grace)
    signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()

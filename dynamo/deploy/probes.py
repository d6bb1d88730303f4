"""The kubelet's probes, for `run`'s replicas: one check of a Kubernetes probe (`httpGet`, `tcpSocket`, `exec`)
bounded by its `timeoutSeconds`, and the kubelet's way of counting results (`initialDelaySeconds`,
`periodSeconds`, `failureThreshold`, `successThreshold`, Kubernetes' defaults where the probe gives none).

The supervisor (`supervisor.py`) runs the startup probe until it first passes, then liveness and readiness;
this module says when a result counts. Failures count as the kubelet counts them: none before
`initialDelaySeconds`, at most one per `periodSeconds`, and `failureThreshold` in a row act. A probe that has
not passed yet is checked every second (`EAGER`), so a replica is called started or ready as soon as it is
instead of a period later: on one machine nobody waits for a 10 s tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

EAGER = 1.0  # seconds between checks of a probe that has not passed yet


@dataclass(frozen=True)
class Timing:
    """A probe's timing, with Kubernetes' defaults (0 s delay, every 10 s, 1 s timeout, 3 failures, 1 success)."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    grace: float | None = None  # the probe's own terminationGracePeriodSeconds (else the pod's)

    @classmethod
    def of(cls, probe: dict[str, Any]) -> "Timing":
        def given(key: str, default: float, least: float) -> float:
            value = probe.get(key)
            return max(float(value), least) if isinstance(value, (int, float)) else default

        grace = probe.get("terminationGracePeriodSeconds")
        return cls(initial_delay=given("initialDelaySeconds", 0.0, 0.0), period=given("periodSeconds", 10.0, 1.0),
                   timeout=given("timeoutSeconds", 1.0, 1.0),
                   failure_threshold=int(given("failureThreshold", 3, 1)),
                   success_threshold=int(given("successThreshold", 1, 1)),
                   grace=float(grace) if isinstance(grace, (int, float)) else None)


@dataclass
class Counter:
    """A probe's consecutive results as the kubelet counts them, for a container started at `born`."""

    timing: Timing
    born: float
    failures: int = 0
    successes: int = 0
    _last_failure: float = -math.inf

    def failed(self, now: float) -> bool:
        """Record a failure at `now`; True when it is the `failureThreshold`-th in a row that counts."""
        if now - self.born < self.timing.initial_delay or now - self._last_failure < self.timing.period:
            return False  # not counted: still in the initial delay, or within the period of the last one
        self._last_failure, self.successes = now, 0
        self.failures += 1
        return self.failures >= self.timing.failure_threshold

    def passed(self) -> bool:
        """Record a success; True once `successThreshold` have passed in a row."""
        self.failures, self._last_failure = 0, -math.inf
        self.successes += 1
        return self.successes >= self.timing.success_threshold


PortMap = Callable[[Any], "int | None"]  # a probe's port (number or name) -> this replica's local port


async def local_request(port: int, method: str, path: str, data: bytes = b"",
                        content_type: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request to 127.0.0.1:`port`, its status and body (probes and adapters need no client library
    in the image)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body_head = f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n" if content_type else ""
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{body_head}\r\n".encode()
                     + data)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """Minimal GET to 127.0.0.1, bounded by `timeout`."""
    return await asyncio.wait_for(local_request(port, "GET", path), timeout)


async def check(probe: dict[str, Any] | None, port_of: PortMap, env: dict[str, str], cwd: str) -> bool:
    """One check of `probe` against this replica, within its timeoutSeconds (no probe: running counts)."""
    if not probe:
        return True
    timeout = Timing.of(probe).timeout
    try:
        if "httpGet" in probe:
            status, _ = await http_get(port_of(probe["httpGet"].get("port", 80)) or 0,
                                       probe["httpGet"].get("path", "/"), timeout)
            return 200 <= status < 400
        if "exec" in probe:
            return await _exec(local_command(probe["exec"]["command"]), env, cwd, timeout)
        if "tcpSocket" in probe:
            port = port_of(probe["tcpSocket"].get("port", 0)) or 0
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
            writer.close()
            return True
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return False
    return True  # a grpc probe: not checked here


async def _exec(command: list[str], env: dict[str, str], cwd: str, timeout: float) -> bool:
    child = await asyncio.create_subprocess_exec(*command, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(child.wait(), timeout) == 0
    except asyncio.TimeoutError:
        child.kill()
        await child.wait()
        return False
    except BaseException:  # the probe itself cancelled (a shutdown, a retirement): its child goes with it
        if child.returncode is None:
            child.kill()
            await asyncio.shield(child.wait())
        raise


def local_command(command: list[str]) -> list[str]:
    """An exec probe's command here: `python3` / `python` is this interpreter, as in the image."""
    if command and command[0] in ("python3", "python"):
        return [sys.executable, *command[1:]]
    return list(command)

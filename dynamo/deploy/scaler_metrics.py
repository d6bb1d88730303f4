"""The metrics the autoscalers `dynamo.deploy run` evaluates read (`local_autoscalers.py`): a KEDA
prometheus trigger's query against a real Prometheus, with KEDA's rules for what a query may return,
and a service's CPU and memory use, read from its replicas' processes where Kubernetes would read its
pods' (each replica is a session of processes: a shell, the Dynamo process, an engine's children).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Callable

from dynamo.planner.prometheus import PrometheusClient

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)([KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def quantity(text: object) -> float:
    """A Kubernetes quantity ("500m", "2", "16Gi", "1.5") as a number; ValueError when it is not one."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


class PromTrigger:
    """A KEDA prometheus trigger's value: its query's one element (a vector of one, or a scalar); an
    empty answer is 0 with `ignoreNullValues` (KEDA's default), an error without it, as is an answer of
    several elements (KEDA refuses those too: write the query to aggregate)."""

    def __init__(self, client: PrometheusClient, query: str, ignore_null: bool = True) -> None:
        self.client, self.query, self.ignore_null = client, query, ignore_null

    async def read(self) -> float | None:
        rows = await self.client.query(self.query)
        if not rows:
            if self.ignore_null:
                return 0.0
            raise ValueError(f"prometheus query returned no value (ignoreNullValues is false): {self.query}")
        if len(rows) > 1:
            raise ValueError(f"prometheus query returned {len(rows)} elements, KEDA takes one: {self.query}")
        value = rows[0][1]
        return value if math.isfinite(value) else None


def session_usage(sid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of every live process in session `sid`."""
    cpu, rss = 0.0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 21 and int(fields[3]) == sid:  # fields after "(comm)": state ppid pgrp session ...
            cpu += (int(fields[11]) + int(fields[12])) / _TICK
            rss += int(fields[21]) * _PAGE
    return cpu, rss


class ProcessUsage:
    """A service's average CPU (cores) or memory (bytes) per replica, as utilisation of `request` (percent)
    when one is given; the replicas' process sessions come from `sessions()` at each read. CPU is a rate:
    the first read only takes a sample (None)."""

    def __init__(self, sessions: Callable[[], list[int]], resource: str, request: float | None = None) -> None:
        self.sessions, self.resource, self.request = sessions, resource, request
        self._last: dict[int, tuple[float, float]] = {}  # session -> (when, CPU seconds)

    async def read(self) -> float | None:
        sids = self.sessions()
        if not sids:
            return None
        values = [v for v in (self._one(sid) for sid in sids) if v is not None]
        self._last = {sid: self._last[sid] for sid in sids if sid in self._last}
        if not values:
            return None
        average = sum(values) / len(values)
        return 100.0 * average / self.request if self.request else average

    def _one(self, sid: int) -> float | None:
        cpu, rss = session_usage(sid)
        if self.resource == "memory":
            return float(rss)
        now, last = time.monotonic(), self._last.get(sid)
        self._last[sid] = (now, cpu)
        if last is None or now <= last[0]:
            return None
        return max(cpu - last[1], 0.0) / (now - last[0])

"""Event-loop lag: how late a timer that should fire every `interval` seconds actually
fires. Anything that holds the loop (a big JSON decode, a tokenizer call that keeps the
GIL) shows here as lag, so "no request can stall another" is measured, not assumed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

log = logging.getLogger(__name__)

WARN_LAG_S = 0.25


class LoopLagMonitor:
    """An owned task; `observe(lag)` gets every sample, `worst` the largest since start."""

    def __init__(self, observe: Callable[[float], None], interval: float = 0.01) -> None:
        self.observe = observe
        self.interval = interval
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - before - self.interval)
            self.worst = max(self.worst, lag)
            self.observe(lag)
            if lag > WARN_LAG_S:
                log.warning("event loop was held for %.0f ms", lag * 1e3)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

"""Where each worker is in its engine step, from when its outputs reach the router.

An engine runs one step at a time; a request that arrives mid-step waits for that step to end
before its own prefill runs, so its time to first token is the rest of the running step plus its
own. Every running stream gets a token at the end of every decode step, so the outputs a router
relays mark the workers' step boundaries: the first output after a quiet gap is a step's end, the
gaps between step ends give the step's length (an exponentially weighted mean), and at a routing
decision a worker's remaining step is that length less the time since its last step end.

This matters where the cache does not decide: two workers holding the same prefix (a shared system
prompt), or none holding it. A closed-loop client sends its next request just as its last answer
ended, which is just after that worker's step began: sent back there, it waits a whole step; the
other worker is, on average, half-way through its own.
"""

from __future__ import annotations

from typing import Callable, Hashable

SAME_STEP_FRACTION = 0.25  # outputs closer than this share of a step came from the same step
MIN_SAME_STEP_S = 0.001
MAX_STEP_S = 2.0  # a longer quiet gap is an idle worker (or a long prefill), not a decode step
ALPHA = 0.2  # weight of the newest step length in the mean


class StepClock:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[Hashable, float] = {}  # worker -> when its last step's outputs began to arrive
        self._step: dict[Hashable, float] = {}  # worker -> mean step length (seconds)

    def output(self, worker: Hashable) -> None:
        """An output of `worker` arrived now."""
        now = self._clock()
        last = self._last.get(worker)
        step = self._step.get(worker)
        if last is not None:
            gap = now - last
            if gap < max(MIN_SAME_STEP_S, SAME_STEP_FRACTION * (step or 0.0)):
                return  # another stream's token of the same step
            if gap < MAX_STEP_S:
                self._step[worker] = gap if step is None else step + ALPHA * (gap - step)
        self._last[worker] = now

    def wait(self, worker: Hashable) -> float:
        """Seconds until `worker`'s running step ends, as far as its outputs tell: 0 when it is not
        known to be mid-step (idle, a step overdue such as a long prefill, or no outputs yet)."""
        last = self._last.get(worker)
        step = self._step.get(worker)
        if last is None or step is None:
            return 0.0
        return max(step - (self._clock() - last), 0.0)

    def forget_worker(self, worker_id: int) -> None:
        """Forget every (worker_id, dp_rank) key of a worker that left."""
        for key in [k for k in self._last if isinstance(k, tuple) and k[0] == worker_id]:
            self._last.pop(key, None)
            self._step.pop(key, None)

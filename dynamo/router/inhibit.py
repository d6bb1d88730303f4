"""Local inhibition of failed workers (NVIDIA Dynamo's `DYN_INHIBITED_DURATION_SECS`): the one
owner of "which workers did this process just see fail", used by every dispatcher that routes
over a `WorkerPool` (the frontend's `Dispatcher`, the `dynamo.router` service).

A worker that could not be reached, whose stream broke mid-way, that missed a caller's output
deadline (likely hung: discovery still lists a stopped process), or that refused a request
because it is draining, is left out of this process's routing for `duration` seconds, so the
requests that follow do not each discover the failure again while discovery (lease TTL,
unregistration) catches up. Inhibition is local and advisory: it never edits the pool, it only
widens a request's `exclude` set.

When every worker a request could go to is inhibited, the request is routed over them anyway
(fail open, like Envoy's panic threshold): a short-lived local suspicion must not turn into a
503 for a worker that may already be serving again (a blip, a restart at the same address);
the request's own `exclude` set still stops it from trying one worker twice, so a request
whose workers are all really gone ends in `no_workers` after one quick attempt each.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.policy import WorkerPool, candidates
from dynamo.runtime.rp_client import CannotConnect, Disconnected, StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

# Why a worker was inhibited (the metric's `reason` label): the request-plane failures that say
# something about the worker's health, named by their error code.
REASONS = (ErrorCode.CANNOT_CONNECT, ErrorCode.DISCONNECTED, ErrorCode.DRAINING, ErrorCode.TIMEOUT)


def reason_for(exc: StreamError) -> ErrorCode | None:
    """The inhibition reason a request-plane failure gives, None when it says nothing about the
    worker's health (an error answer, a cancel, overload)."""
    if isinstance(exc, CannotConnect):
        return ErrorCode.CANNOT_CONNECT
    if isinstance(exc, Disconnected):
        return ErrorCode.DISCONNECTED
    if isinstance(exc, StreamTimeout):
        return ErrorCode.TIMEOUT
    return ErrorCode.DRAINING if exc.code == ErrorCode.DRAINING else None


class Inhibitor:
    """Instance ids this process saw fail, each with the monotonic time its inhibition ends."""

    def __init__(self, duration: float, registry: CollectorRegistry | None = None,
                 prefix: str = "dynamo_frontend", clock: Callable[[], float] = time.monotonic) -> None:
        if duration < 0:
            raise ValueError("inhibited duration must be >= 0")
        self.duration = duration
        self._clock = clock
        self._until: dict[int, float] = {}
        self.counts = dict.fromkeys(REASONS, 0)
        self.fail_open = 0
        self._metrics = _Metrics(registry, prefix, self) if registry is not None else None

    @property
    def enabled(self) -> bool:
        return self.duration > 0

    def inhibit(self, instance_id: int, reason: ErrorCode) -> None:
        """`instance_id` failed now (`reason` one of REASONS): keep it out of routing for a while."""
        if not self.enabled:
            return
        now = self._clock()
        self._purge(now)
        if self._until.get(instance_id, 0.0) <= now:
            log.info("worker %x inhibited for %g s (%s)", instance_id, self.duration, reason)
        self._until[instance_id] = now + self.duration
        self.counts[reason] += 1
        if self._metrics is not None:
            self._metrics.inhibitions.labels(reason).inc()

    def failed(self, instance_id: int, exc: StreamError) -> None:
        """Inhibit `instance_id` if `exc` says it is unreachable, broken or draining."""
        reason = reason_for(exc)
        if reason is not None:
            self.inhibit(instance_id, reason)

    def active(self) -> set[int]:
        """Instance ids inhibited now."""
        self._purge(self._clock())
        return set(self._until)

    def exclude(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> set[int]:
        """The set a policy should exclude for this request: its own `exclude` plus the inhibited
        workers, unless that would leave no candidate while `exclude` alone leaves some (fail open)."""
        if not self._until:
            return exclude
        inhibited = self.active()
        if not inhibited:
            return exclude
        widened = exclude | inhibited
        if candidates(pool, request, widened) or not candidates(pool, request, exclude):
            return widened
        self.fail_open += 1
        if self._metrics is not None:
            self._metrics.fail_open.inc()
        log.debug("every candidate for %s is inhibited; trying them anyway", pool.name)
        return exclude

    def health(self) -> dict:
        """The `/health` view: what is inhibited now and for how long."""
        now = self._clock()
        self._purge(now)
        return {"inhibition": {
            "duration_secs": self.duration,
            "inhibited_workers": {f"{iid:x}": round(until - now, 3) for iid, until in sorted(self._until.items())},
            "inhibitions_total": dict(self.counts),
            "fail_open_total": self.fail_open,
        }}

    def _purge(self, now: float) -> None:
        expired = [iid for iid, until in self._until.items() if until <= now]
        for iid in expired:
            del self._until[iid]


class _Metrics:
    def __init__(self, registry: CollectorRegistry, prefix: str, owner: Inhibitor) -> None:
        self.inhibitions = Counter(f"{prefix}_worker_inhibitions", "Workers inhibited locally after a failure",
                                   ("reason",), registry=registry)
        for reason in REASONS:
            self.inhibitions.labels(reason)
        self.fail_open = Counter(f"{prefix}_worker_inhibition_fail_open",
                                 "Requests routed over inhibited workers because no other candidate was left",
                                 registry=registry)
        gauge = Gauge(f"{prefix}_inhibited_workers", "Workers inhibited locally now", registry=registry)
        gauge.set_function(lambda: len(owner.active()))

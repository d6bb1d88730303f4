"""Load-aware and direct routing policies, by NVIDIA Dynamo's `--router-mode` names:

- `least-loaded`: the worker with the fewest requests in flight (ties: the one used longest ago);
- `power-of-two`: two workers drawn at random, the one with fewer requests in flight (the classic
  "power of two choices": nearly least-loaded balance without scanning every worker);
- `direct`: the request names its worker (`nvext.backend_instance_id`, `decode_worker_id`, or
  `prefill_worker_id` for a prefill pool); one that does not is refused, never guessed;
- `device-aware-weighted`: Dynamo weighs workers by device type (CPU / CUDA); every worker here
  reports the same kind, so it routes as `least-loaded` and says so once at start.

"In flight" counts this router's own bookings, from `select` to `free` (the request's whole
stream), so it needs no load reports; a second frontend replica counts its own.
"""

from __future__ import annotations

import itertools
import logging
import random

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.config import KvRouterConfig
from dynamo.router.policy import CacheBlindPolicy, WorkerInfo, WorkerPool, pinned_worker, register
from dynamo.router.selector import WorkerHintRequired

log = logging.getLogger(__name__)


class _InFlight:
    """Requests booked per worker by this router; `free` is idempotent (a request may end twice)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.booked: dict[str, int] = {}  # request id -> worker
        self.last_used: dict[int, int] = {}
        self._clock = itertools.count()

    def load(self, worker: WorkerInfo) -> int:
        return self.counts.get(worker.instance_id, 0)

    def book(self, request_id: str, worker: WorkerInfo) -> WorkerInfo:
        self.free(request_id)
        iid = worker.instance_id
        self.counts[iid] = self.counts.get(iid, 0) + 1
        self.booked[request_id] = iid
        self.last_used[iid] = next(self._clock)
        return worker

    def free(self, request_id: str) -> None:
        iid = self.booked.pop(request_id, None)
        if iid is not None:
            left = self.counts.get(iid, 1) - 1
            if left > 0:
                self.counts[iid] = left
            else:
                self.counts.pop(iid, None)


class _Booking(CacheBlindPolicy):
    """What the load-aware policies share: bookings and their health report. A departed worker's
    bookings end with their streams (free), so membership changes need only the router series.
    Each policy says which worker it would pick (`_pick`); `select` books it, `query` only names it."""

    name = "booking"

    def __init__(self, config: KvRouterConfig | None = None) -> None:
        self.inflight = _InFlight()

    def _book(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        return self.inflight.book(request.request_id, self._pick(pool, request, exclude))

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        super().free(request_id, output_tokens)
        self.inflight.free(request_id)

    def health(self) -> dict:
        return {"router": {"router_mode": self.name, "inflight": dict(self.inflight.counts)}}


@register("least-loaded")
class LeastLoadedPolicy(_Booking):
    name = "least-loaded"

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        load, last = self.inflight.load, self.inflight.last_used
        return min(self._candidates(pool, request, exclude),
                   key=lambda w: (load(w), last.get(w.instance_id, -1), w.instance_id))


@register("power-of-two")
class PowerOfTwoPolicy(_Booking):
    name = "power-of-two"

    def __init__(self, config: KvRouterConfig | None = None, rng: random.Random | None = None) -> None:
        super().__init__(config)
        self._rng = rng or random.Random()

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        workers = self._candidates(pool, request, exclude)
        pair = self._rng.sample(workers, 2) if len(workers) > 1 else workers
        return min(pair, key=self.inflight.load)


@register("device-aware-weighted")
class DeviceAwarePolicy(LeastLoadedPolicy):
    name = "device-aware-weighted"

    def __init__(self, config: KvRouterConfig | None = None) -> None:
        super().__init__(config)
        log.warning("--router-mode device-aware-weighted: every worker here reports the same device kind, "
                    "so requests go to the least-loaded worker")


@register("direct")
class DirectPolicy(_Booking):
    name = "direct"

    def _pick(self, pool: WorkerPool, request: PreprocessedRequest, exclude: set[int]) -> WorkerInfo:
        if pinned_worker(pool, request) is None:
            hint = "prefill_worker_id" if pool.role.name == "PREFILL" else "backend_instance_id"
            raise WorkerHintRequired(f"--router-mode direct: the request must name its worker (nvext.{hint})",
                                     f"nvext.{hint}")
        return self._candidates(pool, request, exclude)[0]

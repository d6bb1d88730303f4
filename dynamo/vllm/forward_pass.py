"""Forward-pass metrics from vLLM: a vLLM stat logger (`StatLoggerBase`) that turns each
`record(SchedulerStats, IterationStats)` call (one per engine-core output batch, i.e. per
scheduler iteration) into Dynamo's `ForwardPassMetrics` for the worker's FPM relay.

What vLLM reports, and how each field is filled:
- with `--enable-logging-iteration-details` (vLLM's own flag), `SchedulerStats.iteration_details`
  gives the step exactly: context (prefill) requests and tokens, generation (decode)
  requests, and the step's elapsed time -> `wall_time`;
- without it, the step is inferred: prefill tokens = the iteration's prompt tokens,
  decode requests = running requests, `wall_time` = time since the previous record.
- decode KV tokens = `kv_cache_usage x` the engine's KV capacity (vLLM reports usage, not
  per-request lengths; the variances are left 0);
- queued prefill: waiting requests, tokens estimated with the running average prompt
  length of finished requests.
vLLM reports nothing while idle, so the engine's start and a record showing no running or waiting
request are followed by the all-zero heartbeat (which the relay repeats). `record` runs on the engine's output task; the FPM is handed to the relay on the loop
that created the logger (thread-safe).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from dynamo.llm.forward_pass import ForwardPassMetrics, QueuedRequests, ScheduledRequests


class FpmDeriver:
    """Pure translation, kept apart from vLLM's classes so it is testable without vLLM."""

    def __init__(self, worker_id: str, dp_rank: int, max_kv_tokens: Callable[[], int]) -> None:
        self.worker_id = worker_id
        self.dp_rank = dp_rank
        self.max_kv_tokens = max_kv_tokens
        self.counter = 0
        self.avg_prompt = 0.0
        self._last = time.monotonic()

    def heartbeat(self) -> ForwardPassMetrics:
        """The all-zero message Dynamo sends when the engine goes idle."""
        self.counter += 1
        return ForwardPassMetrics(worker_id=self.worker_id, dp_rank=self.dp_rank, counter_id=self.counter)

    def derive(self, sched: Any, it: Any) -> ForwardPassMetrics:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        for fin in getattr(it, "finished_requests", None) or ():
            n = getattr(fin, "num_prompt_tokens", 0) or 0
            self.avg_prompt = n if not self.avg_prompt else 0.9 * self.avg_prompt + 0.1 * n
        details = getattr(sched, "iteration_details", None)
        kv_tokens = int(round(getattr(sched, "kv_cache_usage", 0.0) * max(self.max_kv_tokens(), 0)))
        if details is not None and not getattr(details, "is_dummy", False):
            prefill_reqs, prefill_tokens = details.num_ctx_requests, details.num_ctx_tokens
            decode_reqs, wall = details.num_generation_requests, details.elapsed_ms / 1000.0
        else:
            prefill_tokens = int(getattr(it, "num_prompt_tokens", 0) or 0) if it is not None else 0
            prefill_reqs = 1 if prefill_tokens else 0
            decode_reqs, wall = getattr(sched, "num_running_reqs", 0), elapsed
        waiting = getattr(sched, "num_waiting_reqs", 0)
        idle = not (prefill_reqs or decode_reqs or waiting)
        self.counter += 1
        return ForwardPassMetrics(
            worker_id=self.worker_id, dp_rank=self.dp_rank, counter_id=self.counter, wall_time=0.0 if idle else wall,
            scheduled_requests=ScheduledRequests(num_prefill_requests=prefill_reqs, sum_prefill_tokens=prefill_tokens,
                                                 num_decode_requests=decode_reqs,
                                                 sum_decode_kv_tokens=kv_tokens if decode_reqs else 0),
            queued_requests=QueuedRequests(num_prefill_requests=waiting,
                                           sum_prefill_tokens=int(waiting * self.avg_prompt)))


def fpm_stat_logger_factory(push: Callable[[ForwardPassMetrics], None], worker_id: str,
                            max_kv_tokens: Callable[[], int]) -> Callable[..., Any]:
    """A vLLM StatLoggerFactory: one logger per engine (DP rank), feeding `push` on this loop."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    loop = asyncio.get_running_loop()

    class ForwardPassStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.deriver = FpmDeriver(worker_id, engine_index, max_kv_tokens)

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is None:
                return
            loop.call_soon_threadsafe(push, self.deriver.derive(scheduler_stats, iteration_stats))
            if not (scheduler_stats.num_running_reqs or scheduler_stats.num_waiting_reqs):
                # vLLM stops reporting when idle: say so once, the relay repeats it
                loop.call_soon_threadsafe(push, self.deriver.heartbeat())

        def log_engine_initialized(self) -> None:
            # An idle engine from the start: the planner counts the engines reporting FPMs against the
            # replicas, and a replica that stayed silent until its first request would hold its pool.
            loop.call_soon_threadsafe(push, self.deriver.heartbeat())

    return ForwardPassStatLogger

"""vLLM -> Dynamo event relays: KV-cache events and engine load.

KV events: vLLM's engine core publishes its native ZMQ KV-event batches
(`KVEventsConfig(publisher="zmq")`); the harness's `ZmqKvEventSource` subscribes at the
addresses worked out here (vLLM's bind/connect rule), so a `--router-mode kv` frontend
sees exact block events with no extra flags.

Load: `EngineStats` is a vLLM stat logger (a `StatLoggerBase` subclass, called on the
event loop for every engine step's stats); it keeps the latest scheduler snapshot that
`LoadPublisher` and the worker's /metrics read.
"""

from __future__ import annotations

from typing import Any, Callable

from dynamo.llm.kv_events.protocol import LoadMetrics


def is_bind_endpoint(endpoint: str) -> bool:
    """vLLM's rule: it binds wildcard/ipc/inproc endpoints and connects to the rest."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


def subscriber_address(endpoint: str) -> str:
    """Where this process reaches a publisher bound at `endpoint`: a wildcard bind is
    reached on loopback; a concrete address (vLLM reports `tcp://*:0` as the node IP and
    port it bound) is used as is."""
    return endpoint.replace("://*:", "://127.0.0.1:")


class EngineStats:
    """Latest engine scheduler snapshot, fed by `stat_logger_factory()` loggers."""

    def __init__(self, total_slots: int) -> None:
        self.total_slots = total_slots
        self.total_blocks = 0
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.records = 0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    def update(self, scheduler_stats: Any) -> None:
        self.records += 1
        self.running = scheduler_stats.num_running_reqs
        # vLLM 0.32 counts waiting requests it deferred (e.g. for remote KV) apart; its own
        # vllm:num_requests_waiting is the sum, and so is the router's queue depth here.
        self.waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs
        self.kv_usage = scheduler_stats.kv_cache_usage
        cache = scheduler_stats.prefix_cache_stats
        if cache is not None:
            self.prefix_queries += cache.queries
            self.prefix_hits += cache.hits

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        return LoadMetrics(worker_id=worker_id, request_active_slots=self.running,
                           request_total_slots=self.total_slots,
                           kv_active_blocks=round(self.kv_usage * self.total_blocks),
                           kv_total_blocks=self.total_blocks, num_requests_waiting=self.waiting,
                           gpu_cache_usage_perc=self.kv_usage, gpu_prefix_cache_hit_rate=self.prefix_hit_rate)


def stat_logger_factory(stats: EngineStats) -> Callable[..., Any]:
    """A vLLM per-engine StatLoggerFactory whose loggers feed `stats`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class DynamoStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                stats.update(scheduler_stats)

        def log_engine_initialized(self) -> None:
            pass

    return DynamoStatLogger

"""A frontend's demand metrics with NVIDIA Dynamo 1.6's names and meanings, what autoscalers (KEDA, an HPA
through a metrics adapter, the planner) read: `requests_started_total` (requests accepted), `active_requests`
(from the handler's entry to the response's end), `queued_requests` (accepted, no first response yet:
waiting for a worker, being tokenized, routed, queued or prefilled) and `model_ready` (the frontend can
route a request for the model now), with the other per-model gauges set at scrape time. Counted only for
models the frontend knows, so a client's made-up model names never become series.
"""

from __future__ import annotations

from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_manager import ModelManager


class Arrival:
    """One request's place in the demand metrics, from arrival to its end."""

    __slots__ = ("metrics", "model", "queued")

    def __init__(self, metrics: FrontendMetrics | None, model: str, endpoint: str, request_type: str) -> None:
        self.metrics, self.model, self.queued = metrics, model, metrics is not None
        if metrics is not None:
            metrics.started.labels(model, endpoint, request_type).inc()
            metrics.active.labels(model).inc()
            metrics.queued.labels(model).inc()

    def first_response(self) -> None:
        if self.queued:
            self.queued = False
            self.metrics.queued.labels(self.model).dec()  # type: ignore[union-attr]

    def close(self) -> None:
        self.first_response()
        if self.metrics is not None:
            self.metrics.active.labels(self.model).dec()
            self.metrics = None


class Demand:
    def __init__(self, models: ModelManager, metrics: FrontendMetrics) -> None:
        self.models, self.metrics = models, metrics

    def arrived(self, model: str, endpoint: str, request_type: str) -> Arrival:
        return Arrival(self.metrics if self.models.knows(model) else None, model, endpoint, request_type)

    def scrape(self, migration_limit: int) -> None:
        """The per-model gauges, set at scrape time: readiness, workers (0 for a model that has none, not the
        last count seen), and the model cards' figures."""
        m = self.metrics
        for name in self.models.retired:
            m.workers.labels(name).set(0)
        for name in [*self.models.models, *self.models.retired, *self.models.expected]:
            m.ready.labels(name).set(1 if self.models.has_workers(name) else 0)
        for entry in self.models.models.values():
            m.model_series(entry.name)
            m.workers.labels(entry.name).set(len(entry.decode_workers()))
            m.context_length.labels(entry.name).set(entry.card.context_length)
            m.block_size.labels(entry.name).set(entry.card.kv_cache_block_size)
            m.migration_limit.labels(entry.name).set(migration_limit)
            m.total_kv_blocks.labels(entry.name).set(
                sum(w.card.runtime_config.total_kv_blocks or 0 for w in entry.decode_workers()))
            configs = [w.card.runtime_config for w in entry.decode_workers()]
            for gauge, field in ((m.max_num_seqs, "max_num_seqs"), (m.max_num_batched_tokens, "max_num_batched_tokens")):
                value = next((getattr(c, field) for c in configs if getattr(c, field) is not None), None)
                if value is not None:  # the engine's per-worker limit (the same on every worker of a model)
                    gauge.labels(entry.name).set(value)

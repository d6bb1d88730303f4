"""A frontend's demand metrics with NVIDIA Dynamo 1.6's names and meanings, what autoscalers (KEDA, an HPA
through a metrics adapter, the planner) read: `requests_started_total` (requests accepted), `active_requests`
(from the handler's entry to the response's end), `queued_requests` (accepted, no first response yet:
waiting for a worker, being tokenized, routed, queued or prefilled) and `model_ready` (the frontend can
route a request for the model now). Counted only for models the frontend knows, so a client's made-up
model names never become series.
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

    def scrape(self) -> None:
        """The per-model gauges read at scrape time: readiness, and no workers for a model that has none."""
        for name in self.models.retired:  # all its workers gone: 0, not the last count seen
            self.metrics.workers.labels(name).set(0)
        for name in [*self.models.models, *self.models.retired, *self.models.expected]:
            self.metrics.ready.labels(name).set(1 if self.models.has_workers(name) else 0)

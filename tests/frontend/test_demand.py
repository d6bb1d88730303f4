"""Dynamo's demand metrics as one request moves through them: accepted (started, active, queued), first
response (leaves queued), end (leaves active); closing twice or before a first response counts once."""

from __future__ import annotations

from prometheus_client import generate_latest

from dynamo.frontend.demand import Arrival
from dynamo.frontend.metrics import FrontendMetrics
from tests.fixtures.procs import metric_value


def read(metrics: FrontendMetrics, name: str, **labels: str) -> float | None:
    return metric_value(generate_latest(metrics.registry).decode(), f"dynamo_frontend_{name}", labels or None)


def test_a_request_is_queued_until_its_first_response_and_active_until_its_end():
    metrics = FrontendMetrics()
    arrival = Arrival(metrics, "m", "chat_completions", "stream")
    assert read(metrics, "requests_started_total", model="m", endpoint="chat_completions") == 1
    assert (read(metrics, "queued_requests", model="m"), read(metrics, "active_requests", model="m")) == (1, 1)
    arrival.first_response()
    arrival.first_response()
    assert (read(metrics, "queued_requests", model="m"), read(metrics, "active_requests", model="m")) == (0, 1)
    arrival.close()
    arrival.close()
    assert (read(metrics, "queued_requests", model="m"), read(metrics, "active_requests", model="m")) == (0, 0)


def test_a_request_that_ends_before_any_response_leaves_both_and_an_unknown_model_counts_nowhere():
    metrics = FrontendMetrics()
    Arrival(metrics, "m", "completions", "unary").close()  # refused, or the client left while it waited
    assert (read(metrics, "queued_requests", model="m"), read(metrics, "active_requests", model="m")) == (0, 0)
    Arrival(None, "made-up", "completions", "unary").close()
    assert read(metrics, "requests_started_total", model="made-up") is None

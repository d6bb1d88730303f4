"""Frontend metrics: the request outcome vocabulary reaches Prometheus as Dynamo's label text."""

from __future__ import annotations

from prometheus_client import generate_latest

from dynamo.frontend.metrics import FrontendMetrics, RequestOutcome


def test_every_outcome_series_exists_at_zero_with_dynamos_label_text():
    metrics = FrontendMetrics()
    metrics.model_series("m")
    text = generate_latest(metrics.registry).decode()
    for status in ("success", "error", "cancelled"):
        for endpoint in ("chat_completions", "completions"):
            line = (f'dynamo_frontend_requests_total{{endpoint="{endpoint}",model="m",request_type="stream",'
                    f'status="{status}"}} 0.0')
            assert line in text, line
    assert "RequestOutcome" not in text  # the enum's value, never its repr


def test_an_outcome_counts_under_its_plain_name():
    metrics = FrontendMetrics()
    metrics.requests.labels("m", "completions", "unary", RequestOutcome.CANCELLED).inc()
    assert metrics.requests.labels("m", "completions", "unary", "cancelled")._value.get() == 1.0
    assert {o.value for o in RequestOutcome} == {"success", "error", "cancelled"}

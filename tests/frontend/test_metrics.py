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


def test_per_worker_gauges_follow_the_prefilling_and_decoding_workers_and_leave_with_them():
    from dynamo.frontend.dispatch import RequestHandle

    metrics = FrontendMetrics()
    aggregated, disaggregated = RequestHandle(), RequestHandle()
    aggregated.worker_id = 7
    disaggregated.worker_id, disaggregated.prefill_worker_id, disaggregated.prefill_dp_rank = 8, 9, 1
    metrics.first_token_on(aggregated, 0.05, 100)
    metrics.decoded_on(aggregated, 0.01)
    metrics.first_token_on(disaggregated, 0.2, 300)
    metrics.decoded_on(disaggregated, 0.02)
    metrics.first_token_on(RequestHandle(), 1.0, 1)  # no worker yet (refused before routing): nothing
    text = generate_latest(metrics.registry).decode()
    assert 'worker_last_time_to_first_token_seconds{dp_rank="0",worker_id="7",worker_type="decode"} 0.05' in text
    assert 'worker_last_input_sequence_tokens{dp_rank="1",worker_id="9",worker_type="prefill"} 300.0' in text
    assert 'worker_last_inter_token_latency_seconds{dp_rank="0",worker_id="8",worker_type="decode"} 0.02' in text
    ttft_rows = [line for line in text.splitlines() if line.startswith("dynamo_frontend_worker_last_time_to_first")]
    assert len(ttft_rows) == 2  # workers 7 and 9, not the decode worker 8 nor the unrouted request
    metrics.keep_workers({8})
    text = generate_latest(metrics.registry).decode()
    assert 'worker_id="7"' not in text and 'worker_id="9"' not in text and 'worker_id="8"' in text

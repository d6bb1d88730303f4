"""Frontend metrics: Dynamo 1.6.1's request-outcome labels, bucket boundaries, and a request counted once."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from dynamo.frontend.errors import ApiError, model_not_found, no_workers, shutting_down, worker_disconnected
from dynamo.frontend.metrics import FrontendMetrics, RequestOutcome, error_type_of
from tests.fixtures.procs import metric_value

# What NVIDIA Dynamo 1.6.1's frontend exposes (its live /metrics, side by side with ours).
DYNAMO_BUCKETS = {
    "request_duration_seconds": "0 2 4 8 16 32 64 130 260 510",
    "time_to_first_token_seconds": "0 0.0022 0.0047 0.01 0.022 0.047 0.1 0.22 0.47 1 2.2 4.7 10 22 48 100 220 480",
    "inter_token_latency_seconds": "0 0.0018 0.0033 0.0059 0.011 0.02 0.035 0.064 0.12 0.21 0.38 0.69 1.2 2.3 4.1 "
                                   "7.4 13 24 44 80",
    "input_sequence_tokens": "0 100 210 430 870 1800 3600 7400 15000 31000 63000 130000",
    "cached_tokens": "0 100 210 430 870 1800 3600 7400 15000 31000 63000 130000",
    "output_sequence_tokens": "0 100 210 430 880 1800 3700 7600 16000 32000",
    "tokenize_seconds": "0.0001 0.0005 0.001 0.005 0.01 0.05 0.1 0.5 1",
    "template_seconds": "0.00001 0.00005 0.0001 0.0005 0.001 0.005 0.01 0.05",
}


def text_of(metrics: FrontendMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_models_request_series_exists_at_zero_with_dynamos_labels():
    metrics = FrontendMetrics()
    metrics.model_series("m")
    text = text_of(metrics)
    for endpoint in ("chat_completions", "completions"):
        line = (f'dynamo_frontend_requests_total{{endpoint="{endpoint}",error_type="",model="m",request_type="stream",'
                f'status="success"}} 0.0')
        assert line in text, line
    assert 'error_type="cancelled",model="m",request_type="unary",status="error"} 0.0' in text
    assert 'status="cancelled"' not in text and "RequestOutcome" not in text and "ErrorType" not in text


@pytest.mark.parametrize("name, bounds", sorted(DYNAMO_BUCKETS.items()))
def test_histograms_have_dynamos_bucket_boundaries(name, bounds):
    metrics = FrontendMetrics()
    metrics.model_series("m")
    for hist in (metrics.stages.tokenize, metrics.stages.template, metrics.cached.labels("m")):
        hist.observe(0)
    found = [line.split('le="')[1].split('"')[0] for line in text_of(metrics).splitlines()
             if line.startswith(f"dynamo_frontend_{name}_bucket")]
    assert [float(b) for b in found[:-1]] == [float(b) for b in bounds.split()] and found[-1] == "+Inf"


@pytest.mark.parametrize("error, error_type, failure", [
    (ApiError(400, "bad temperature"), "validation", ("InvalidRequest", "request.invalid")),
    (model_not_found("nope"), "not_found", ("NotFound", "request.not_found")),
    (no_workers("m"), "unavailable", ("Unavailable", "backend.unavailable")),
    (shutting_down(), "unavailable", ("Unavailable", "backend.unavailable")),
    (worker_disconnected(0xab), "unavailable", ("Unavailable", "transport.disconnected")),
    (ApiError(529, "busy", code="overloaded"), "overload", ("ResourceExhausted", "capacity.exhausted")),
    (ApiError(504, "late", code="worker_timeout"), "response_timeout", ("ResponseTimeout", "backend.response_timeout")),
    (ApiError(500, "engine error", code="engine_error"), "internal", ("Internal", "runtime.internal")),
])
def test_an_error_counts_once_under_its_type_and_as_a_failure(error, error_type, failure):
    metrics = FrontendMetrics()
    with pytest.raises(ApiError):
        with metrics.tally("m", "chat_completions", "stream"):
            raise error
    text = text_of(metrics)
    labels = {"model": "m", "endpoint": "chat_completions", "request_type": "stream"}
    assert metric_value(text, "dynamo_frontend_requests_started_total", labels) == 1
    assert metric_value(text, "dynamo_frontend_requests_total", {**labels, "status": "error"}) == 1
    assert metric_value(text, "dynamo_frontend_requests_total", {**labels, "error_type": error_type}) == 1
    assert metric_value(text, "dynamo_frontend_failures_total", {"class": failure[0], "reason": failure[1]}) == 1
    assert error_type_of(error.status) == error_type


def test_a_cancellation_is_an_error_of_type_cancelled_and_no_failure():
    metrics = FrontendMetrics()
    tally = metrics.tally("m", "completions", "unary")
    tally.ended(RequestOutcome.CANCELLED)
    tally.close()
    tally.close()  # once
    text = text_of(metrics)
    assert metric_value(text, "dynamo_frontend_requests_total", {"status": "error", "error_type": "cancelled"}) == 1
    assert metric_value(text, "dynamo_frontend_requests_total") == 1
    assert metric_value(text, "dynamo_frontend_failures_total") is None


def test_a_client_that_left_inside_the_tally_is_a_cancellation_and_no_failure():
    """A client that hangs up while its request waits for a worker: a ConnectionError out of the tally."""
    metrics = FrontendMetrics()
    with pytest.raises(ConnectionError):
        with metrics.tally("m", "completions", "unary"):
            raise ConnectionError("client disconnected while waiting for a worker")
    text = text_of(metrics)
    assert metric_value(text, "dynamo_frontend_requests_total", {"status": "error", "error_type": "cancelled"}) == 1
    assert not metric_value(text, "dynamo_frontend_requests_total", {"error_type": "internal"})
    assert metric_value(text, "dynamo_frontend_failures_total") is None


@pytest.mark.parametrize("exc", [RecursionError("too deep"), OverflowError("int too big")])
def test_a_body_beyond_the_parsers_limits_counts_as_the_400_it_is_answered_with(exc):
    metrics = FrontendMetrics()
    with pytest.raises(type(exc)):
        with metrics.tally("m", "chat_completions", "unary"):
            raise exc
    text = text_of(metrics)
    assert metric_value(text, "dynamo_frontend_requests_total", {"status": "error", "error_type": "validation"}) == 1
    assert not metric_value(text, "dynamo_frontend_requests_total", {"error_type": "internal"})
    assert metric_value(text, "dynamo_frontend_failures_total",
                        {"class": "InvalidRequest", "reason": "request.invalid"}) == 1


def test_an_unknown_model_counts_as_dynamos_unknown_model_and_an_unreported_end_as_internal():
    metrics = FrontendMetrics()
    metrics.tally("made-up", "completions", "unary", known=False, count_started=False).close()
    text = text_of(metrics)
    labels = {"model": "unknown_model", "endpoint": "completions"}
    assert metric_value(text, "dynamo_frontend_requests_started_total", labels) == 1  # counted here all the same
    assert metric_value(text, "dynamo_frontend_requests_total", {**labels, "error_type": "internal"}) == 1
    assert 'model="made-up"' not in text


def test_disconnected_clients_is_a_gauge_as_in_dynamo():
    metrics = FrontendMetrics()
    metrics.disconnects.inc()
    text = text_of(metrics)
    assert "# TYPE dynamo_frontend_disconnected_clients gauge" in text
    assert metric_value(text, "dynamo_frontend_disconnected_clients") == 1


def test_per_worker_gauges_follow_the_prefilling_and_decoding_workers_and_leave_with_them():
    from dynamo.frontend.request_handle import RequestHandle

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

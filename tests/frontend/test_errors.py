"""The frontend's HTTP errors (dynamo/frontend/errors.py): each named constructor's status,
OpenAI error body (`{"error": {"message", "type", "param", "code"}}`) and the request-plane
code mapping. Clients branch on these values, so they are pinned here exactly."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend import errors
from dynamo.frontend.pooling_api import CLASSIFY, EMBEDDINGS
from dynamo.frontend.errors import ApiError
from dynamo.runtime.asgi import json_encode
from dynamo.runtime.rp_client import CannotConnect, Disconnected, StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode

BUSY = "Service temporarily unavailable: all workers are busy, please retry later"

# (error, status, type, param, code, message)
CASES = [
    (errors.bad_request("`n` too big", "n"), 400, "invalid_request_error", "n", "invalid_value", "`n` too big"),
    (errors.bad_request("nope", None, "invalid_json"), 400, "invalid_request_error", None, "invalid_json", "nope"),
    (errors.model_not_found("m"), 404, "invalid_request_error", "model", "model_not_found",
     "The model `m` does not exist."),
    (EMBEDDINGS.not_served("m"), 404, "invalid_request_error", "model", "model_not_found",
     "Model not found: `m` serves no embeddings"),
    (CLASSIFY.not_served("m"), 404, "invalid_request_error", "model", "model_not_found",
     "Model not found: `m` serves no classify"),
    (errors.worker_not_found("backend_instance_id", 255, "m"), 400, "invalid_request_error",
     "nvext.backend_instance_id", "worker_not_found", "No worker with instance id 255 (ff) serves 'm'"),
    (errors.no_route("/v2/x"), 404, "not_found_error", None, "not_found", "no route /v2/x"),
    (errors.method_not_allowed("GET", "/v1/completions"), 405, "invalid_request_error", None, "method_not_allowed",
     "method GET not allowed on /v1/completions"),
    (errors.body_too_large(100, 250), 413, "invalid_request_error", None, "request_too_large",
     "request body (250 bytes) exceeds the limit of 100 bytes"),
    (errors.body_too_large(100), 413, "invalid_request_error", None, "request_too_large",
     "request body exceeds the limit of 100 bytes"),
    (errors.no_workers("m"), 503, "service_unavailable", None, "no_workers",
     "No workers are available for model 'm'; retry later"),
    (errors.workers_unavailable("no workers available for ns.router.generate"), 503, "service_unavailable", None,
     "no_workers", "no workers available for ns.router.generate"),
    (errors.all_busy(), 503, "service_unavailable", None, "all_workers_busy", BUSY),
    (errors.overloaded("Worker overloaded: x"), 529, "overloaded_error", None, "overloaded", "Worker overloaded: x"),
    (errors.too_many_requests(), 529, "overloaded_error", None, "overloaded",
     "Too many requests in flight; retry later"),
    (errors.too_many_requests(503), 503, "overloaded_error", None, "overloaded",
     "Too many requests in flight; retry later"),
    (errors.shutting_down(), 503, "service_unavailable", None, "shutting_down",
     "The server is shutting down; retry on another instance"),
    (errors.prefill_unavailable("short_prompt"), 503, "service_unavailable", None, "prefill_unavailable",
     "disaggregated serving is enforced but prefill is unavailable (short_prompt)"),
    (errors.worker_failed(StreamError("boom", ErrorCode.INTERNAL)), 500, "internal_error", None, "internal",
     "Worker failed: boom"),
    (errors.worker_timeout(0xab, StreamTimeout("no response within 2 s")), 504, "timeout_error", None,
     "worker_timeout", "worker ab timed out: no response within 2 s"),
    (errors.worker_disconnected(0xab), 502, "internal_error", None, "worker_disconnected",
     "worker ab disconnected mid-stream"),
    (errors.engine_error("CUDA OOM"), 500, "internal_error", None, "engine_error", "engine error: CUDA OOM"),
    (errors.no_embedding(), 500, "internal_error", None, "engine_error", "the worker returned no embedding"),
]


@pytest.mark.parametrize("error, status, type_, param, code, message", CASES)
def test_constructor_status_and_openai_body(error, status, type_, param, code, message):
    assert isinstance(error, ApiError) and str(error) == message
    assert error.status == status
    body = json.loads(json_encode(error.body()))  # as the client receives it
    assert body == {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.mark.parametrize("exc, status, code, message", [
    (StreamError("Server overloaded: 4 requests in flight", ErrorCode.OVERLOADED), 529, "overloaded",
     "Worker overloaded: Server overloaded: 4 requests in flight"),
    (StreamError("malformed request: x", ErrorCode.BAD_REQUEST), 400, "invalid_request", "malformed request: x"),
    (StreamError("bad", "invalid_request"), 400, "invalid_request", "bad"),
    (StreamError(f"Service temporarily unavailable: {BUSY}", ErrorCode.BUSY), 503, "all_workers_busy",
     f"Service temporarily unavailable: {BUSY}"),
    (StreamError("no workers available for m", ErrorCode.NO_WORKERS), 503, "no_workers",
     "no workers available for m"),
    (StreamError("worker 7 timed out: no first output within 8 s (first-output deadline)", ErrorCode.TIMEOUT), 504,
     "worker_timeout", "worker 7 timed out: no first output within 8 s (first-output deadline)"),
    (StreamError("KeyError: 'x'"), 500, "internal", "Worker failed: KeyError: 'x'"),
    (StreamError("from a newer peer", "quota_exceeded"), 500, "quota_exceeded", "Worker failed: from a newer peer"),
])
def test_a_workers_error_answer_maps_to_one_http_error(exc, status, code, message):
    error = errors.from_stream_error(exc)
    assert (error.status, error.body()["error"]["code"], error.message) == (status, code, message)
    assert type(error.body()["error"]["code"]) is str  # the plain string, never an enum member


def test_a_lost_worker_is_a_504_when_it_timed_out_else_a_502():
    assert errors.worker_lost(1, StreamTimeout("silent")).status == 504
    assert errors.worker_lost(1, Disconnected()).status == 502
    assert errors.worker_lost(1, CannotConnect("refused")).status == 502

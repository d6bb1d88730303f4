"""How the worker's `generate` endpoint logs and counts a request its caller ended, on a real request-plane
server and client: a caller that has what it needs (a stop string matched: `ResponseStream.stop()`, Dynamo's
`stop_generating`) ends it as `stopped`, not a cancellation; a caller that no longer wants it (`cancel()`, its
client left) as `cancelled`; neither is an ERROR line, which is kept for requests that failed."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, StopConditions, request_encoder
from dynamo.runtime.distributed import ComponentMetrics
from dynamo.runtime.logs import JsonlFormatter, RequestEvents
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import HandlerError, RequestPlaneServer
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.requests import RequestHandler
from tests.fixtures.procs import metric_value

LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "dynamo_endpoint": "generate", "worker_id": "1"}


class Endless:
    """An engine that streams a token every few milliseconds until aborted; models `fail`, `invalid` and `crash`:
    it refuses mid-stream (a HandlerError, a ValueError, another exception)."""

    def __init__(self) -> None:
        self.aborted: list[str] = []

    async def generate(self, request: PreprocessedRequest, request_id: str):
        for i in range(100_000):
            yield LLMEngineOutput(token_ids=[i])
            if request.model == "fail":
                raise HandlerError("bad parameter", ErrorCode.BAD_REQUEST)
            if request.model == "invalid":  # an engine's own validation error: the harness maps it to bad_request
                raise ValueError("top_k out of range")
            if request.model == "crash":
                raise RuntimeError("engine crashed")
            await asyncio.sleep(0.005)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def error_code(self, exc: Exception) -> ErrorCode | None:
        return None


def events() -> tuple[RequestEvents, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonlFormatter())
    logger = logging.getLogger("test.worker.request_end_status")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return RequestEvents(jsonl=True, logger=logger), out


async def ended(how: str, model: str = "m") -> tuple[dict, str, list[str]]:
    """Run one request that the caller ends `how` ("stop", "cancel" or "read": to its end); the worker's
    "request completed" line, its metrics text, and what the engine was told to abort."""
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry, lambda: 1)
    metrics.bind(EndpointId("ns", "backend", "generate"))
    trace, out = events()
    engine = Endless()
    server = RequestPlaneServer("127.0.0.1", 0)
    server.on_request_start, server.on_request_end = metrics.start, metrics.end
    server.add_handler("generate", RequestHandler(engine, events=trace).generate, PreprocessedRequest)
    await server.start()
    client = RequestPlaneClient()
    request = PreprocessedRequest(request_id="r1", model=model, token_ids=[1, 2], eos_token_ids=[2],
                                  stop_conditions=StopConditions(max_tokens=10))
    try:
        stream = await client.open_stream(server.address, "generate", request_encoder.encode(request))
        if how == "read":
            with pytest.raises(StreamError):
                [p async for p in stream]
        else:
            await stream.__anext__()
            stream.stop() if how == "stop" else stream.cancel()
        for _ in range(200):
            if metric_value(generate_latest(registry).decode(), "dynamo_component_requests_total", LABELS):
                break
            await asyncio.sleep(0.01)
    finally:
        await client.close()
        await server.close()
    [done] = [line for line in map(json.loads, out.getvalue().splitlines()) if line["message"] == "request completed"]
    return done, generate_latest(registry).decode(), engine.aborted


async def test_a_request_the_caller_stopped_is_stopped_not_cancelled():
    done, text, aborted = await ended("stop")
    assert (done["level"], done["status"]) == ("INFO", "stopped")
    assert metric_value(text, "dynamo_component_cancellation_total", LABELS) == 0
    assert metric_value(text, "dynamo_component_requests_total", LABELS) == 1
    assert aborted  # the engine stops generating all the same


async def test_a_request_the_caller_cancelled_is_counted_and_logged_at_info():
    done, text, aborted = await ended("cancel")
    assert (done["level"], done["status"]) == ("INFO", "cancelled")
    assert metric_value(text, "dynamo_component_cancellation_total", LABELS) == 1
    assert aborted


async def test_a_request_that_failed_is_the_error_line():
    done, text, _ = await ended("read", model="fail")
    assert (done["level"], done["status"], done["error_type"]) == ("ERROR", "error", "bad_request")
    assert metric_value(text, "dynamo_component_cancellation_total", LABELS) == 0
    assert metric_value(text, "dynamo_component_errors_total", {**LABELS, "error_type": "bad_request"}) == 1


@pytest.mark.parametrize(("model", "error_type", "detail"), [
    ("invalid", "bad_request", "ValueError: top_k out of range"),
    ("crash", "internal", "RuntimeError: engine crashed"),
])
async def test_an_engine_exception_is_logged_as_the_error_type_it_is_counted_under(model, error_type, detail):
    """The log line's error_type is the one errors_total counts (the exception mapped once), its detail the engine's
    own exception."""
    done, text, _ = await ended("read", model=model)
    assert (done["level"], done["status"], done["error_type"], done["error_detail"]) == ("ERROR", "error",
                                                                                        error_type, detail)
    assert metric_value(text, "dynamo_component_errors_total", {**LABELS, "error_type": error_type}) == 1

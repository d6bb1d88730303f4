"""Dynamo's per-endpoint worker metrics on a real request-plane server and client: request and response payload
bytes, and `dynamo_component_errors_total` by the error code a handler answered with."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dynamo.runtime.distributed import ComponentMetrics
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import HandlerError, RequestPlaneServer
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.procs import metric_value

LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "dynamo_endpoint": "generate"}


async def test_bytes_and_errors_are_counted_per_endpoint():
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry)
    metrics.bind(EndpointId("ns", "backend", "generate"))
    server = RequestPlaneServer("127.0.0.1", 0)
    server.on_request_start, server.on_request_end = metrics.start, metrics.end

    async def handler(payload: bytes, ctx):
        if payload == b"refuse":
            raise HandlerError("no", ErrorCode.OVERLOADED)
        yield b"x" * 10
        yield b"y" * 5

    server.add_handler("generate", handler)
    await server.start()
    client = RequestPlaneClient()
    try:
        assert [p async for p in await client.open_stream(server.address, "generate", b"hello")] == [b"x" * 10,
                                                                                                   b"y" * 5]
        with pytest.raises(StreamError):
            [p async for p in await client.open_stream(server.address, "generate", b"refuse")]
    finally:
        await client.close()
        await server.close()
    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_component_request_bytes_total", LABELS) == len(b"hello") + len(b"refuse")
    assert metric_value(text, "dynamo_component_response_bytes_total", LABELS) == 15
    assert metric_value(text, "dynamo_component_errors_total", {**LABELS, "error_type": "overloaded"}) == 1
    assert metric_value(text, "dynamo_component_requests_total", {**LABELS, "status": "success"}) == 1

"""Dynamo's per-endpoint worker metrics on a real request-plane server and client, with Dynamo 1.6.1's labels
(`worker_id`, the instance id in hex, on every series; no `status`): request and response payload bytes,
`dynamo_component_errors_total` by the error code a handler answered with, `cancellation_total`."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dynamo.runtime.distributed import ComponentMetrics
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from dynamo.runtime.rp_server import HandlerError, RequestPlaneServer
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.procs import metric_value

LABELS = {"dynamo_namespace": "ns", "dynamo_component": "backend", "dynamo_endpoint": "generate",
          "worker_id": "694d5a9c1e7b2f"}
INSTANCE_ID = 0x694D5A9C1E7B2F


async def test_bytes_and_errors_are_counted_per_endpoint():
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry, lambda: INSTANCE_ID)
    metrics.bind(EndpointId("ns", "backend", "generate"))
    server = RequestPlaneServer("127.0.0.1", 0)
    server.on_request_start, server.on_request_end = metrics.start, metrics.end

    async def handler(payload: bytes, ctx):
        if payload == b"refuse":
            raise HandlerError("no", ErrorCode.OVERLOADED)
        yield b"x" * 10
        if payload == b"forever":
            await asyncio.sleep(60)
        yield b"y" * 5

    server.add_handler("generate", handler)
    await server.start()
    client = RequestPlaneClient()
    try:
        assert [p async for p in await client.open_stream(server.address, "generate", b"hello")] == [b"x" * 10,
                                                                                                   b"y" * 5]
        with pytest.raises(StreamError):
            [p async for p in await client.open_stream(server.address, "generate", b"refuse")]
        stream = await client.open_stream(server.address, "generate", b"forever")
        assert await stream.__anext__() == b"x" * 10
        stream.cancel()  # the caller stops it: the handler is cancelled
        for _ in range(100):
            if metric_value(generate_latest(registry).decode(), "dynamo_component_inflight_requests", LABELS) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        await server.close()
    text = generate_latest(registry).decode()
    assert metric_value(text, "dynamo_component_request_bytes_total", LABELS) == len(b"hellorefuseforever")
    assert metric_value(text, "dynamo_component_response_bytes_total", LABELS) == 25
    assert metric_value(text, "dynamo_component_errors_total", {**LABELS, "error_type": "overloaded"}) == 1
    assert metric_value(text, "dynamo_component_requests_total", LABELS) == 3  # every request, however it ended
    assert metric_value(text, "dynamo_component_cancellation_total", LABELS) == 1
    assert "status=" not in text


def test_an_endpoints_series_exist_at_zero_with_dynamos_labels_and_buckets():
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry, lambda: INSTANCE_ID)
    metrics.bind(EndpointId("ns", "backend", "generate"))
    text = generate_latest(registry).decode()
    for name in ("requests_total", "cancellation_total", "inflight_requests", "request_bytes_total",
                 "response_bytes_total", "request_duration_seconds_count"):
        assert metric_value(text, f"dynamo_component_{name}", LABELS) == 0, name
    assert metric_value(text, "dynamo_component_uptime_seconds", {"worker_id": LABELS["worker_id"]}) > 0
    bounds = [line.split('le="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("dynamo_component_request_duration_seconds_bucket")]
    assert [float(b) for b in bounds[:-1]] == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60,
                                               120, 300, 600]

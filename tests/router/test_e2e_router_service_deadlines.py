"""Deadlines in `python -m dynamo.router` (`--first-token-timeout-secs`,
`--stream-idle-timeout-secs`, as on the frontend), end to end against a real mocker frozen with
SIGSTOP (its kernel still accepts the request, then nothing comes back, as with a wedged
engine). The service's caller gets a `timeout` error naming the worker instead of a hang; the
service frees its booking, inhibits the worker and cancels the worker's stream (the thawed
worker does not run the request on).

The mocker is slow on purpose (a 500-token answer takes about a minute), so a request the
service failed to cancel would still be running when the test looks. The deadlines are
generous for a loaded box; the tests assert outcomes, never durations."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, output_decoder, request_encoder
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import BLOCK, MODEL, tokens

pytestmark = pytest.mark.e2e

FIRST_TOKEN_SECS = 8
IDLE_SECS = 4


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("router-deadlines"), tiny_model, "file")
    try:
        # ~0.35 s prefill for a short prompt, ~0.12 s per decode step.
        c.worker = c.mocker("--speedup-ratio", "0.05", "--block-size", str(BLOCK))
        port = free_port()
        c.dump = c.tmp / "router-config.json"  # type: ignore[attr-defined]
        c.router = c.start("dynamo.router", [  # type: ignore[attr-defined]
            "--endpoint", "dynamo.backend.generate", "--router-block-size", str(BLOCK),
            "--first-token-timeout-secs", str(FIRST_TOKEN_SECS), "--dump-config-to", str(c.dump)],
            env={"DYN_SYSTEM_PORT": str(port), "DYN_STREAM_IDLE_TIMEOUT_SECS": str(IDLE_SECS)}, name="router")
        c.router_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        wait_until(lambda: "_worker_active_decode_blocks{" in router_metrics(c), 60, "the service to see the worker")
        yield c
    finally:
        c.worker.thaw()
        c.stop()


def router_metrics(cluster) -> str:
    return http_get(cluster.router_url + "/metrics")[1].decode()


def booked(cluster) -> float:
    return metric_value(router_metrics(cluster), "dynamo_component_worker_active_decode_blocks") or 0.0


def worker_metric(cluster, name: str, labels: dict | None = None) -> float:
    text = http_get(f"http://127.0.0.1:{cluster.worker.system_port}/metrics")[1].decode()
    return metric_value(text, name, labels) or 0.0


def generate_requests(cluster, status: str) -> float:
    """The worker's generate requests that ended as `status` ("success": neither cancelled nor failed)."""
    generate = {"dynamo_endpoint": "generate"}
    cancelled = worker_metric(cluster, "dynamo_component_cancellation_total", generate)
    if status == "cancelled":
        return cancelled
    return (worker_metric(cluster, "dynamo_component_requests_total", generate) - cancelled
            - worker_metric(cluster, "dynamo_component_errors_total", generate))


def request(max_tokens: int, seed: int) -> bytes:
    return request_encoder.encode(PreprocessedRequest(
        request_id=uuid.uuid4().hex, model=MODEL, token_ids=tokens(seed, 40),
        stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True)))


def generate(cluster, payload: bytes, after_first=None) -> tuple[int, StreamError | None]:
    """(tokens received, the error that ended the stream or None); `after_first()` runs once
    the first output has arrived. Bounded, so a service without deadlines fails, not hangs."""
    return asyncio.run(asyncio.wait_for(_generate(cluster, payload, after_first), 120))


async def _generate(cluster, payload: bytes, after_first) -> tuple[int, StreamError | None]:
    store = make_store("file", root=str(cluster.tmp / "kv"))
    await store.start()
    client = RequestPlaneClient()
    try:
        found = await store.get_prefix("v1/instances/dynamo/kv-router/generate/")
        assert found, cluster.router.log()
        address = json.loads(next(iter(found.values())))["transport"]["tcp"]
        stream = await client.open_stream(address, "generate", payload)
        received = 0
        try:
            async for item in stream:
                received += len(output_decoder.decode(item).token_ids)
                if after_first is not None and received:
                    after_first()
                    after_first = None
        except StreamError as exc:
            return received, exc
        return received, None
    finally:
        await client.close()
        await store.close()


def test_the_dump_shows_the_deadlines_from_flag_and_env(cluster):
    wait_until(lambda: cluster.dump.exists(), 60, "the router's config dump")
    config = json.loads(cluster.dump.read_text())["config"]
    assert (config["first_token_timeout_secs"], config["stream_idle_timeout_secs"]) == (FIRST_TOKEN_SECS, IDLE_SECS)


def test_a_frozen_worker_is_a_timeout_error_for_the_caller_not_a_hang(cluster):
    assert generate(cluster, request(3, 1)) == (3, None)  # deadlines leave a healthy stream alone
    successes = generate_requests(cluster, "success")
    cluster.worker.freeze()
    try:
        received, error = generate(cluster, request(500, 2))
        wait_until(lambda: booked(cluster) == 0, 30, "the service to free its booking")
    finally:
        cluster.worker.thaw()
    assert received == 0 and error is not None
    assert error.code == "timeout" and "first-output deadline" in str(error), error
    assert "timed out" in str(error) and "worker " in str(error)
    assert metric_value(router_metrics(cluster), "dynamo_component_worker_inhibitions_total",
                        {"reason": "timeout"}) >= 1
    # Thawed, the worker finds the cancel next to the request: a short request sent after it
    # completes while the stale 500-token one is not running (it would take about a minute).
    assert generate(cluster, request(3, 3)) == (3, None)
    assert generate_requests(cluster, "success") == successes + 1
    assert worker_metric(cluster, "dynamo_component_inflight_requests") == 0


def test_a_worker_frozen_mid_stream_hits_the_idle_deadline(cluster):
    cancelled = generate_requests(cluster, "cancelled")
    try:
        received, error = generate(cluster, request(500, 4), after_first=cluster.worker.freeze)
        wait_until(lambda: booked(cluster) == 0, 30, "the service to free its booking")
    finally:
        cluster.worker.thaw()
    assert 0 < received < 500 and error is not None, (received, error)
    assert error.code == "timeout" and "stream idle deadline" in str(error), error
    # The service cancelled the worker's stream: thawed, the worker stops the request.
    wait_until(lambda: generate_requests(cluster, "cancelled") == cancelled + 1, 60, "the worker to see the cancel")
    assert worker_metric(cluster, "dynamo_component_inflight_requests") == 0

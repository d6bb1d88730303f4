"""Deadlines on worker streams (`--first-token-timeout-secs`), end to end: a worker that is
frozen (SIGSTOP: its kernel still accepts connections, so the request is sent and then nothing
comes back, as with a wedged engine) must not hang its client. With `--migration-limit` the
request completes on another worker; without it the client gets a 504 `worker_timeout`.

Both frontends run round-robin over the same two mockers. The deadlines are generous for a
loaded box; the tests assert outcomes (status, tokens, counters), never durations."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
MAX_TOKENS = 20


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("deadlines"), tiny_model, "file")
    try:
        c.workers = [c.mocker("--speedup-ratio", "10") for _ in range(2)]  # type: ignore[attr-defined]
        c.frontend("--migration-limit", "1", "--first-token-timeout-secs", "6")
        c.wait_workers(MODEL, 2)
        c.migrating = c.base_url  # type: ignore[attr-defined]
        c.frontend("--first-token-timeout-secs", "2")  # --migration-limit 0 (the default)
        c.wait_workers(MODEL, 2)
        c.strict = c.base_url  # type: ignore[attr-defined]
        yield c
    finally:
        for worker in c.workers:
            worker.thaw()
        c.stop()


def complete(base_url: str, stream: bool = False) -> httpx.Response:
    body = {"model": MODEL, "prompt": "are you there", "max_tokens": MAX_TOKENS, "ignore_eos": True,
            "stream": stream}
    with httpx.Client(timeout=120) as client:
        return client.post(base_url + "/v1/completions", json=body)


def worker_generate_requests(worker, status: str) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    generate = {"dynamo_endpoint": "generate"}
    assert status == "success"  # neither cancelled nor failed
    return ((metric_value(text, "dynamo_component_requests_total", generate) or 0.0)
            - (metric_value(text, "dynamo_component_cancellation_total", generate) or 0.0)
            - (metric_value(text, "dynamo_component_errors_total", generate) or 0.0))


def test_a_frozen_worker_times_out_and_the_request_completes_on_another(cluster):
    frozen = cluster.workers[0]
    frozen.freeze()
    try:
        # Two requests at once: round-robin gives one to each worker, so one meets the frozen one.
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda _: complete(cluster.migrating), range(2)))
    finally:
        frozen.thaw()
    for resp in responses:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == MAX_TOKENS
    text = http_get(cluster.migrating + "/metrics")[1].decode()
    assert metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"}) == 1
    health = json.loads(http_get(cluster.migrating + "/health")[1])
    assert health["inhibition"]["inhibitions_total"]["timeout"] == 1
    # Thawed, the worker finds the frontend's cancel next to the request: it never runs it to the end.
    wait_until(lambda: http_get(f"http://127.0.0.1:{frozen.system_port}/metrics")[0] == 200, 60,
               "the thawed worker's metrics")
    assert worker_generate_requests(frozen, "success") == 0
    assert frozen.alive()


def test_without_migration_a_frozen_worker_is_a_504_not_a_hang(cluster):
    wait_until(lambda: cluster.worker_count(MODEL) == 2, 60, "both workers listed again")  # base_url: strict
    for worker in cluster.workers:
        worker.freeze()
    try:
        unary, streamed = complete(cluster.strict), complete(cluster.strict, stream=True)
    finally:
        for worker in cluster.workers:
            worker.thaw()
    for resp in (unary, streamed):  # nothing was sent yet: a real status, also for a stream
        assert resp.status_code == 504, resp.text
        error = resp.json()["error"]
        assert error["code"] == "worker_timeout" and "first-output deadline" in error["message"]


def test_without_deadlines_a_hung_worker_that_left_discovery_loses_its_streams_to_another(tiny_model, tmp_path):
    """No deadlines set (the default): a worker frozen mid-stream still ACKs TCP keep-alives, so only
    its discovery lease lapsing (2 s here) says it is gone; its streams, silent since, are then cut and
    migrate to the other worker, whole, instead of waiting on it for good."""
    c = Cluster(tmp_path, tiny_model, "file")
    workers = []
    try:
        workers = [c.mocker("--speedup-ratio", "1", env={"ETCD_LEASE_TTL": "2"}) for _ in range(2)]
        c.frontend("--router-mode", "round-robin", "--migration-limit", "2")
        c.wait_workers(MODEL, 2)
        body = {"model": MODEL, "prompt": "a story", "max_tokens": 400, "ignore_eos": True, "stream": True}
        counts: list[int] = [0, 0]

        def stream(i: int) -> tuple[int, str | None]:
            with httpx.stream("POST", c.base_url + "/v1/completions", json=body, timeout=120) as resp:
                finish = None
                for line in resp.iter_lines():
                    if line.startswith("data: {"):
                        choice = json.loads(line[6:])["choices"][0]
                        counts[i] += 1
                        finish = choice.get("finish_reason") or finish
                return counts[i], finish

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(stream, i) for i in range(2)]  # round-robin: one on each worker
            wait_until(lambda: min(counts) >= 5, 60, "both streams under way")
            workers[0].freeze()
            results = [f.result(timeout=150) for f in futures]
        assert all(finish == "length" for _, finish in results), results
        text = http_get(c.base_url + "/metrics")[1].decode()
        assert (metric_value(text, "dynamo_frontend_model_migration_total",
                             {"migration_type": "ongoing_request"}) or 0) >= 1
    finally:
        for worker in workers:
            worker.thaw()
        c.stop()

"""Overload answers 529 (or the status in DYN_HTTP_OVERLOAD_STATUS_CODE) with an OpenAI
error body, while the requests already admitted keep streaming; capacity freed is
capacity regained."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
LIMIT = 2


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("overload"), tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "0.05")  # 20x slower than real time: a held stream outlives the test
        c.frontend("--rejection-frontend-request-concurrency-limit", str(LIMIT))
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def inflight(url: str) -> float:
    return metric_value(http_get(url + "/metrics")[1].decode(), "dynamo_frontend_inflight_requests",
                        {"model": MODEL}) or 0.0


def body(stream: bool) -> dict:
    return {"model": MODEL, "prompt": "keep going", "max_tokens": 2000, "ignore_eos": True, "stream": stream}


def check_overloaded(url: str, status: int) -> None:
    """Hold LIMIT streams open at `url`, then one more request is refused with `status`."""
    with httpx.Client(base_url=url, timeout=60) as http:
        held = []
        try:
            for _ in range(LIMIT):
                ctx = http.stream("POST", "/v1/completions", json=body(True))
                resp = ctx.__enter__()
                assert resp.status_code == 200
                lines = resp.iter_lines()  # kept alive in `held`: a collected iterator closes its response
                held.append((ctx, lines))
                while not next(lines).startswith("data: "):  # first token out: the request is admitted
                    pass
            wait_until(lambda: inflight(url) == LIMIT, 30, f"{LIMIT} requests in flight")
            for stream in (False, True):
                refused = http.post("/v1/completions", json={**body(stream), "max_tokens": 4})
                assert refused.status_code == status, refused.text
                error = refused.json()["error"]
                assert error["code"] == "overloaded" and error["type"] == "overloaded_error" and error["message"]
            rejected = metric_value(http_get(url + "/metrics")[1].decode(), "dynamo_frontend_model_rejection_total",
                                    {"model": MODEL, "reason": "overloaded"})
            assert rejected == 2
        finally:
            for ctx, _ in held:
                ctx.__exit__(None, None, None)
        wait_until(lambda: inflight(url) == 0, 30, "held streams to end")
        ok = http.post("/v1/completions", json={**body(False), "max_tokens": 4})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4


def test_frontend_concurrency_limit_answers_529(cluster):
    check_overloaded(cluster.base_url, 529)


def test_overload_status_is_configurable(cluster):
    port = free_port()
    frontend = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                                 "--rejection-frontend-request-concurrency-limit", str(LIMIT)],
                             {"DYN_HTTP_OVERLOAD_STATUS_CODE": "503"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: b'"tiny"' in http_get(url + "/v1/models")[1], 60, "second frontend to list the model")
        check_overloaded(url, 503)
    finally:
        frontend.stop()


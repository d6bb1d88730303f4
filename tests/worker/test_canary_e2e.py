"""Canary health checks (Dynamo's DYN_HEALTH_CHECK_ENABLED): a real mocker worker idle for DYN_CANARY_WAIT_TIME
sends its engine a one-token request; answered in time, /health stays 200 and the canaries are counted; an
engine too slow to answer within DYN_HEALTH_CHECK_REQUEST_TIMEOUT (a mocker slowed 10,000 times: a hung engine
to the canary) turns /health 503 and says why in the log. Without the setting no canary is sent."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

CANARY = {"DYN_HEALTH_CHECK_ENABLED": "true", "DYN_CANARY_WAIT_TIME": "1", "DYN_HEALTH_CHECK_REQUEST_TIMEOUT": "1"}


def health(worker) -> int:
    return http_get(f"http://127.0.0.1:{worker.system_port}/health")[0]


def canaries(worker, result: str) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_canary_health_checks_total", {"result": result}) or 0.0


def test_canaries_keep_a_healthy_worker_ready_and_take_a_hung_one_out(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        healthy = c.mocker("--speedup-ratio", "100", env=CANARY)
        hung = c.mocker("--speedup-ratio", "0.0001", env=CANARY)
        plain = c.mocker("--speedup-ratio", "100")
        for worker in (healthy, hung, plain):
            wait_until(lambda w=worker: "initialized" in w.log(), 120, "the worker to serve")
        wait_until(lambda: canaries(healthy, "ok") >= 3, 60, "three canaries answered")
        assert health(healthy) == 200 and canaries(healthy, "failed") == 0
        wait_until(lambda: health(hung) == 503, 60, "the hung worker's /health to turn 503")
        body = json.loads(http_get(f"http://127.0.0.1:{hung.system_port}/health")[1])
        assert "notready" in body["endpoints"].values(), body
        assert canaries(hung, "failed") >= 1
        assert "canary health check of dyn://dynamo.backend.generate failed (no answer within 1 s)" in hung.log()
        assert health(plain) == 200 and canaries(plain, "ok") == 0  # off unless enabled, as in Dynamo
    finally:
        c.stop()

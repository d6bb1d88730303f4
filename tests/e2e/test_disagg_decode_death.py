"""The decode worker of a disaggregated pair dies mid-stream: its streams move to the
other decode worker (prefilled again by the prefill worker) and every client sees a
whole stream. Mocker workers; the token-exact version needs vLLM disagg engines (see
tests/vllm/test_migration.py for the aggregated case)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures.load import Load
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def inflight(proc) -> float:
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_inflight_requests") or 0.0


def test_decode_worker_death_migrates_its_streams(tiny_model, tmp_path):
    cluster = Cluster(tmp_path, tiny_model, "file")
    load = None
    try:
        cluster.mocker("--speedup-ratio", "20", "--disaggregation-mode", "prefill")
        decoders = [cluster.mocker("--speedup-ratio", "5", "--is-decode-worker") for _ in range(2)]
        cluster.frontend("--migration-limit", "3", "--enforce-disagg")
        cluster.wait_workers(MODEL, 3)
        load = Load(cluster.base_url, clients=4, max_tokens=120, pause=0)
        load.start()
        load.progress(4, "disaggregated load running")
        wait_until(lambda: all(inflight(d) > 0 for d in decoders), 60, "streams on both decode workers")
        decoders[0].kill()
        load.progress(8, "load continues on the surviving decode worker")
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        assert (metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"})
                or 0) >= 1
        assert (metric_value(text, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) or 0) > 0
    finally:
        if load is not None:
            load.finish()
        cluster.stop()
    assert load.failures == [], load.failures[:5]


def test_a_dead_prefill_worker_sends_prefills_to_the_other_one(tiny_model, tmp_path):
    """One of two prefill workers is killed (its registration outlives it for the lease's TTL): under
    --enforce-disagg every request is still prefilled remotely, on the other one, not answered 503;
    the dead one is inhibited, so later requests do not each rediscover it."""
    cluster = Cluster(tmp_path, tiny_model, "file")
    try:
        prefills = [cluster.mocker("--speedup-ratio", "20", "--disaggregation-mode", "prefill") for _ in range(2)]
        cluster.mocker("--speedup-ratio", "20", "--is-decode-worker")
        cluster.frontend("--router-mode", "round-robin", "--enforce-disagg")
        cluster.wait_workers(MODEL, 3)
        prefills[0].kill()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={
                "model": MODEL, "prompt": f"request {i} after the prefill worker died", "max_tokens": 4}), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        assert metric_value(text, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) == 8
        assert (metric_value(text, "dynamo_frontend_worker_inhibitions_total") or 0) >= 1
    finally:
        cluster.stop()

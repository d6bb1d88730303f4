"""NVIDIA Dynamo's KV-cache gauges on a real mocker worker's system `/metrics`: the names and
labels Dynamo's autoscaling guide and dashboards query (`LLMBackendMetrics` in Dynamo's
common/utils/prometheus.py), with values from the simulated KV manager that move with requests; and the
`vllm:*` series Dynamo 1.6.1's mocker exposes beside them, labelled `{engine, model_name}`."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.procs import http_get, metric_value, mocker_cluster, wait_until

pytestmark = pytest.mark.e2e

BLOCKS = 100
BLOCK_SIZE = 16
LABELS = {"model": "tiny", "dynamo_component": "backend", "dp_rank": "0"}
VLLM = {"engine": "0", "model_name": "tiny"}


def prompt(n: int, salt: int) -> list[int]:
    """Token ids clear of the tiny model's special tokens."""
    return [10 + (i * 37 + salt * 101) % 900 for i in range(n)]


def test_kv_cache_gauges_follow_the_simulated_cache(tiny_model, tmp_path):
    with mocker_cluster(tmp_path, tiny_model, "--num-gpu-blocks-override", str(BLOCKS), "--block-size",
                        str(BLOCK_SIZE), "--speedup-ratio", "1") as cluster:
        worker = cluster.procs[0]
        url = f"http://127.0.0.1:{worker.system_port}/metrics"

        def gauge(name: str, labels: dict[str, str] = LABELS) -> float | None:
            return metric_value(http_get(url)[1].decode(), f"dynamo_component_{name}", labels)

        def vllm(name: str) -> float | None:
            return metric_value(http_get(url)[1].decode(), f"vllm:{name}", VLLM)

        assert gauge("total_blocks") == BLOCKS
        assert gauge("gpu_cache_usage_percent") == 0.0
        assert gauge("model_load_time_seconds", {"model": "tiny", "dynamo_component": "backend"}) >= 0.0

        # A repeated prompt is served from the prefix cache: the hit rate goes up.
        completions = cluster.openai_client().completions
        repeated = prompt(4 * BLOCK_SIZE, 1)
        completions.create(model="tiny", prompt=repeated, max_tokens=1)
        first = gauge("kv_cache_hit_rate")
        completions.create(model="tiny", prompt=repeated, max_tokens=1)
        assert gauge("kv_cache_hit_rate") > first
        completions.create(model="tiny", prompt=prompt(8, 3), max_tokens=5, extra_body={"ignore_eos": True})
        assert (vllm("time_to_first_token_seconds_count"), vllm("e2e_request_latency_seconds_count")) == (3, 3)
        assert vllm("inter_token_latency_seconds_count") == 4  # the last request's tokens after its first
        assert (vllm("num_requests_running"), vllm("num_requests_waiting"), vllm("num_preemptions_total")) == (0, 0, 0)
        endpoint = {"dynamo_namespace": "dynamo", "dynamo_component": "backend", "dynamo_endpoint": "generate"}
        assert gauge("request_bytes_total", endpoint) > 4 * BLOCK_SIZE  # the token ids travelled
        assert gauge("response_bytes_total", endpoint) > 0
        # Dynamo's exposition: no prometheus_client `_created` sample beside any counter or histogram
        for exposition in (http_get(url)[1].decode(), http_get(cluster.base_url + "/metrics")[1].decode()):
            assert "_total" in exposition and "_created" not in exposition

        # A long request holds blocks while it runs, and gives them back when it is cancelled.
        body = {"model": "tiny", "prompt": prompt(6 * BLOCK_SIZE, 2), "max_tokens": 1500, "ignore_eos": True,
                "stream": True}
        with httpx.Client(timeout=60) as client, client.stream("POST", cluster.base_url + "/v1/completions",
                                                               json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()  # held: dropping the iterator would close the stream (a cancel)
            next(line for line in lines if line.startswith("data: "))
            assert gauge("gpu_cache_usage_percent") >= 6 / BLOCKS
            assert vllm("kv_cache_usage_perc") == vllm("gpu_cache_usage_perc") >= 6 / BLOCKS
            assert vllm("num_requests_running") == 1
        wait_until(lambda: gauge("gpu_cache_usage_percent") == 0.0, 15, "the cancelled request's blocks freed")
        assert gauge("total_blocks") == BLOCKS

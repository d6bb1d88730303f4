"""The sglang and trtllm workers end to end through the real frontend, discovery and request
plane, with only the engine swapped for its STAND-IN (`standin_worker.py`): an aggregated
worker serves the OpenAI API and prints the readiness line; a prefill + decode pair serves a
disaggregated request (SGLang: the prefill answers with its bootstrap triple at once and
prefills in the background; TRT-LLM: context_only -> opaque params -> generation_only)."""

from __future__ import annotations

import re

import openai
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value

pytestmark = pytest.mark.e2e


def worker(cluster: Cluster, engine: str, name: str, *args: str):
    flag = "--model-path"
    port = free_port()
    proc = cluster.start("tests.worker.standin_worker",
                         [engine, flag, str(cluster.model_dir), "--served-model-name", name, *args],
                         {"DYN_SYSTEM_PORT": str(port)}, name=f"{engine}-{name}-{len(cluster.procs)}")
    proc.system_url = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("standin-workers"), tiny_model, "file")
    try:
        c.agg = {"sglang": worker(c, "sglang", "sglang-agg", "--enable-metrics"),
                 "trtllm": worker(c, "trtllm", "trtllm-agg", "--publish-metrics")}
        bootstrap = str(free_port())
        c.pairs = {"sglang": [worker(c, "sglang", "sglang-pd", "--page-size", "4", "--disaggregation-mode", m,
                                     "--disaggregation-bootstrap-port", bootstrap) for m in ("prefill", "decode")],
                   "trtllm": [worker(c, "trtllm", "trtllm-pd", "--kv-block-size", "4", "--disaggregation-mode", m)
                              for m in ("prefill", "decode")]}
        c.frontend()
        for e in ("sglang", "trtllm"):
            c.wait_workers(f"{e}-agg", 1, timeout=120)
            c.wait_workers(f"{e}-pd", 2, timeout=120)
        yield c
    finally:
        c.stop()


def client(cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)


@pytest.mark.parametrize("engine", ["sglang", "trtllm"])
def test_aggregated_worker_serves_and_logs_readiness(cluster, engine):
    model = f"{engine}-agg"
    chunks = list(client(cluster).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 6
    assert re.search(r"Worker dynamo\.backend\.generate initialized \(instance [0-9a-f]+\)",
                     cluster.agg[engine].log())


@pytest.mark.parametrize("engine", ["sglang", "trtllm"])
def test_disaggregated_pair_prefills_remotely(cluster, engine):
    def remote() -> float:
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        return metric_value(text, "dynamo_frontend_remote_prefills_total", {"model": f"{engine}-pd"}) or 0.0

    before = remote()
    resp = client(cluster).completions.create(model=f"{engine}-pd", prompt="split me " * 10, max_tokens=7)
    assert resp.usage.completion_tokens == 7
    assert remote() == before + 1
    prefill = cluster.pairs[engine][0]
    assert re.search(r"Worker dynamo\.prefill\.generate initialized", prefill.log())


def test_sglang_series_are_served_on_the_workers_metrics_with_dynamos_labels(cluster):
    """With --enable-metrics, the scheduler processes' series (SGLang's multiprocess files) and the
    tokenizer manager's (this process's registry) are on the worker's /metrics, labelled as
    Dynamo labels engine series; SGLang's own `model_name` label stays SGLang's."""
    client(cluster).completions.create(model="sglang-agg", prompt=[7] * 12, max_tokens=2)
    text = http_get(cluster.agg["sglang"].system_url + "/metrics")[1].decode()
    labels = {"dynamo_namespace": "dynamo", "dynamo_component": "backend", "model_name": "standin"}
    assert metric_value(text, "sglang:num_running_reqs", {**labels, "tp_rank": "0"}) == 3
    assert (metric_value(text, "sglang:prompt_tokens_total", labels) or 0) >= 12
    assert "dynamo_component_kvstats_total_blocks" in text  # Dynamo's own series are still there


def test_trtllm_series_are_served_on_the_workers_metrics_with_dynamos_labels(cluster):
    """With --publish-metrics, TensorRT-LLM's MetricsCollector records each finished request's
    metrics_dict, and its series are on the worker's /metrics named `trtllm_*` (added where the release
    leaves them bare, as 1.1 does), with Dynamo's labels and TensorRT-LLM's own model_name."""
    def served() -> float:
        text = http_get(cluster.agg["trtllm"].system_url + "/metrics")[1].decode()
        return metric_value(text, "trtllm_request_success_total", {
            "dynamo_namespace": "dynamo", "model_name": "trtllm-agg", "engine_type": "trtllm",
            "finished_reason": "length"}) or 0.0

    before = served()
    client(cluster).completions.create(model="trtllm-agg", prompt=[5] * 8, max_tokens=3)
    assert served() == before + 1
    text = http_get(cluster.agg["trtllm"].system_url + "/metrics")[1].decode()
    assert (metric_value(text, "trtllm_time_to_first_token_seconds_count", {"model_name": "trtllm-agg"}) or 0) >= 1

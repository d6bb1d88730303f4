"""Disaggregated prefill/decode with real vLLM CPU engines: frontend + prefill + decode
`dynamo.vllm` workers, KV moved by NIXL (UCX over loopback) in namespace `nixl` and by our
TCP fallback in namespace `tcp` (one frontend per namespace, one shared discovery).

Greedy output is token-exact with vLLM's own aggregated output; the KV really crossed
(a prefill on other weights changes the decode's output, decode metrics count the bytes);
a killed prefill worker falls back to aggregated decode. Engines start once per module.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import msgspec
import openai
import pytest

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, SamplingOptions, StopConditions
from dynamo.llm.protocol import request_encoder
from dynamo.llm.tokenizer import Tokenizer
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.procs import REPO, http_get, metric_value, wait_until
from tests.vllm.conftest import MODEL, VllmCluster, metrics, offline_reference, reference_result

# Engine start-ups in the module fixture count against the first test: minutes on a busy 2-core box.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]

MAX_TOKENS = 16
OTHER = "tiny999"


def ids(n: int, salt: int) -> list[int]:
    return [6 + (i * 37 + salt * 101) % 4000 for i in range(n)]


PROMPTS = [ids(75, 2), ids(140, 3)]  # several 32-token blocks, the last one partial


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-disagg")
    other = tmp / "tiny-llama-s999"  # same shape, other weights
    subprocess.run([str(vllm_python), "-m", "dynamo.llm.tiny_model", "--out", str(other), "--weights", "--seed",
                    "999"], cwd=REPO, check=True, capture_output=True, timeout=180)
    cluster = VllmCluster(tmp, vllm_model, vllm_python)

    def worker(ns: str, core: int, *args: str):
        return cluster.vllm_worker(*args, env={"DYN_NAMESPACE": ns, "VLLM_CPU_OMP_THREADS_BIND": str(core)},
                                   wait=False)

    try:
        w = {"p_nixl": worker("nixl", 0, "--disaggregation-mode", "prefill", "--kv-transfer-backend", "nixl"),
             "d_nixl": worker("nixl", 1, "--disaggregation-mode", "decode", "--kv-transfer-backend", "nixl"),
             "p_tcp": worker("tcp", 0, "--is-prefill-worker", "--kv-transfer-backend", "tcp"),
             "d_tcp": worker("tcp", 1, "--is-decode-worker", "--kv-transfer-backend", "tcp"),
             # other weights, other model name: never picked by the frontend, driven directly
             "p_other": worker("tcp", 0, "--model", str(other), "--served-model-name", OTHER,
                               "--disaggregation-mode", "prefill", "--kv-transfer-backend", "tcp")}
        reference = offline_reference(vllm_python, vllm_model, PROMPTS, MAX_TOKENS, tmp / "reference.log")
        urls = {}
        for ns in ("nixl", "tcp"):
            cluster.frontend("--namespace", ns)
            urls[ns] = cluster.base_url
        w = cluster.wait_all_healthy(w)
        for ns in ("nixl", "tcp"):
            wait_until(lambda: instances(urls[ns], MODEL, None) == 2, 60, f"2 {ns} workers")
        yield {"cluster": cluster, "urls": urls, "reference": reference_result(reference),
               "tokenizer": Tokenizer.from_dir(vllm_model), **w}
    finally:
        cluster.stop()


def health_instances(url: str) -> list[dict]:
    return json.loads(http_get(url + "/health")[1]).get("instances", [])


def instances(url: str, model: str, component: str | None) -> int:
    return sum(1 for i in health_instances(url) if i.get("model") == model
               and (component is None or i.get("component") == component))


def address(proc) -> str:
    """The worker's request-plane address, from its own log line."""
    found = re.search(r"serving \S+ as instance \w+ at (\S+)", proc.log_path.read_text(errors="replace"))
    assert found, proc.log()
    return found.group(1)


def worker_metric(proc, name: str, labels: dict | None = None) -> float:
    return metric_value(metrics(proc), name, labels) or 0.0


def frontend_metric(url: str, name: str, labels: dict | None = None) -> float:
    return metric_value(http_get(url + "/metrics")[1].decode(), name, labels) or 0.0


def check_token_exact(env, ns: str) -> None:
    # Retries on 503: with five CPU engines on two cores a worker's keep-alive can stall past the
    # discovery TTL (its log then says "lease ... lost (keep-alive stalled past the TTL);
    # re-registering"), and for that moment the frontend rightly has no decode worker. The openai
    # client backs off and retries, as a real client would; token-exactness is what is tested here.
    client = openai.OpenAI(base_url=env["urls"][ns] + "/v1", api_key="x", max_retries=4, timeout=120)
    # Both workers of this namespace registered, now (the other namespace's test ran first, on a
    # machine its engines keep busy): a 503 here would say nothing about disaggregation.
    wait_until(lambda: instances(env["urls"][ns], MODEL, None) == 2, 120, f"2 {ns} workers")
    before = worker_metric(env[f"p_{ns}"], "dynamo_component_requests_total", {"status": "success"})
    for prompt, expected in zip(PROMPTS, env["reference"]):
        resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].text == env["tokenizer"].decode(expected)
        assert resp.usage.completion_tokens == len(expected)
    # The prefill worker served the prefills; the decode worker pulled the KV without failures.
    # (at least: a retried 503 may have prefilled once before finding no decode worker)
    assert worker_metric(env[f"p_{ns}"], "dynamo_component_requests_total", {"status": "success"}) >= before + 2
    assert frontend_metric(env["urls"][ns], "dynamo_frontend_remote_prefills_total", {"model": MODEL}) >= 2
    assert frontend_metric(env["urls"][ns], "dynamo_frontend_kv_transfer_bytes_total", {"transport": ns}) > 0
    assert worker_metric(env[f"p_{ns}"], "dynamo_component_kv_transfer_transport", {"transport": ns}) == 1
    assert worker_metric(env[f"d_{ns}"], "dynamo_component_kv_transfer_transport", {"transport": ns}) == 1
    wait_until(lambda: worker_metric(env[f"d_{ns}"], "dynamo_component_kv_transfer_bytes_total",
                                     {"direction": "received"}) > 0, 15, "decode worker to count received KV")
    assert worker_metric(env[f"d_{ns}"], "dynamo_component_kv_transfer_failures_total") == 0
    # KV events: the prefill worker relays vLLM's (its blocks feed a prefill-pool KV router); a
    # decode worker never publishes (-1: no relay at all), its blocks being pulled copies.
    wait_until(lambda: worker_metric(env[f"p_{ns}"], "dynamo_vllm_kv_events_relayed") >= 1, 15,
               "prefill worker to relay KV events")
    assert worker_metric(env[f"d_{ns}"], "dynamo_vllm_kv_events_relayed") == -1


def test_nixl_token_exact_with_vllm_aggregated(env):
    check_token_exact(env, "nixl")


def test_tcp_token_exact_with_vllm_aggregated(env):
    check_token_exact(env, "tcp")


async def generate(addr: str, request: PreprocessedRequest) -> list[LLMEngineOutput]:
    client = RequestPlaneClient()
    try:
        stream = await client.open_stream(addr, "generate", request_encoder.encode(request))
        return [msgspec.msgpack.decode(item, type=LLMEngineOutput) async for item in stream]
    finally:
        await client.close()


def prefill_then_decode(env, prefill: str, prompt: list[int], tag: str) -> tuple[list[int], dict]:
    """The frontend's two hops by hand over the request plane: prefill worker, then decode worker."""
    base = dict(model=MODEL, token_ids=prompt, sampling_options=SamplingOptions(temperature=0.0), eos_token_ids=[])
    pre = PreprocessedRequest(request_id=f"{tag}-p", prefill_only=True, stop_conditions=StopConditions(max_tokens=1),
                              **base)
    outs = asyncio.run(generate(address(env[prefill]), pre))
    params = next(o.disaggregated_params for o in outs if o.disaggregated_params)
    dec = PreprocessedRequest(request_id=f"{tag}-d", disaggregated_params=params,
                              stop_conditions=StopConditions(max_tokens=MAX_TOKENS, ignore_eos=True), **base)
    outs = asyncio.run(generate(address(env["d_tcp"]), dec))
    return [t for o in outs for t in o.token_ids], params


def test_kv_really_crossed_prefill_on_other_weights_changes_output(env):
    prompt = PROMPTS[0]
    same, params = prefill_then_decode(env, "p_tcp", prompt, "same")
    assert params["transport"] == "tcp" and params["do_remote_prefill"] is True
    assert {"remote_engine_id", "remote_request_id", "remote_block_ids", "remote_host", "remote_port"} <= set(params)
    assert params["kv_bytes"] > 0 and len(params["remote_block_ids"]) == 3
    other, params = prefill_then_decode(env, "p_other", prompt, "other")
    expected = env["reference"][0]
    assert same[:len(expected)] == expected
    assert other[:len(expected)] != expected  # the decode continued from the other model's KV


def test_prefill_worker_killed_falls_back_to_aggregated_decode(env):
    url = env["urls"]["nixl"]
    served = worker_metric(env["d_nixl"], "dynamo_component_requests_total", {"status": "success"})
    env["p_nixl"].kill()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
    for _ in range(2):  # before and after discovery notices
        resp = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].text == env["tokenizer"].decode(env["reference"][1])
    wait_until(lambda: instances(url, MODEL, None) == 1, 30, "prefill worker to leave discovery")
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0)
    assert resp.choices[0].text == env["tokenizer"].decode(env["reference"][0])
    assert worker_metric(env["d_nixl"], "dynamo_component_requests_total", {"status": "success"}) == served + 3

"""Disaggregated prefill/decode with real vLLM CPU engines and NIXL (UCX over loopback):
frontend + prefill + decode `dynamo.vllm` workers. Greedy output is token-exact with vLLM's
own aggregated output; a killed prefill worker falls back to aggregated decode. Engines start
once per module; the TCP fallback transport is `test_disagg_tcp`."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.procs import wait_until
from tests.vllm.conftest import MODEL, VllmCluster
from tests.vllm.disagg_helpers import PROMPTS, MAX_TOKENS, check_token_exact, instances, served, start_pair

# Engine start-ups in the module fixture count against the first test: minutes on a busy 2-core box.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    cluster = VllmCluster(tmp_path_factory.mktemp("vllm-disagg-nixl"), vllm_model, vllm_python)
    try:
        yield start_pair(cluster, "nixl", ["--disaggregation-mode", "prefill", "--kv-transfer-backend", "nixl"],
                         ["--disaggregation-mode", "decode", "--kv-transfer-backend", "nixl"])
    finally:
        cluster.stop()


def test_nixl_token_exact_with_vllm_aggregated(env):
    check_token_exact(env, "nixl")


def test_prefill_worker_killed_falls_back_to_aggregated_decode(env):
    before = served(env["decode"])
    env["prefill"].kill()
    client = openai.OpenAI(base_url=env["url"] + "/v1", api_key="x", max_retries=0, timeout=120)
    for _ in range(2):  # before and after discovery notices
        resp = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].text == env["tokenizer"].decode(env["reference"][1])
    wait_until(lambda: instances(env["url"], MODEL) == 1, 30, "prefill worker to leave discovery")
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0)
    assert resp.choices[0].text == env["tokenizer"].decode(env["reference"][0])
    assert served(env["decode"]) == before + 3

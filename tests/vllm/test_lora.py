"""A LoRA adapter on the real `dynamo.vllm` worker (vLLM CPU, tiny random-weight Llama and a
tiny random adapter built offline): loaded at runtime through the system port, served
through the frontend token-exact against vLLM's own offline output with the same
`LoRARequest`, different from the base model, never a KV hit across base and adapter, and
gone (404, unlisted) after unload. One engine (plus the offline reference) for the module."""

from __future__ import annotations

import httpx
import openai
import pytest

from dynamo.llm.tiny_lora import build_tiny_lora
from dynamo.llm.tokenizer import Tokenizer
from tests.fixtures.procs import http_get, wait_until
from tests.vllm.conftest import MODEL, VllmCluster, offline_reference, reference_result, wait_healthy

# One module-scoped engine start (plus the offline reference) on a busy 2-core box can take minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1500)]

MAX_TOKENS = 16
ADAPTER = "tiny-lora"
SLOW_START = 600  # seconds: a LoRA-enabled CPU engine (and the offline one beside it) on a shared 2-core box
PROMPTS = [[6 + (i * 37 + salt * 101) % 4000 for i in range(n)] for n, salt in ((40, 3), (70, 4))]


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-lora")
    adapter = build_tiny_lora(vllm_model, tmp / "tiny-lora")
    cluster = VllmCluster(tmp, vllm_model, vllm_python)
    try:
        worker = cluster.vllm_worker("--enable-lora", "--max-loras", "2", "--max-lora-rank", "8", wait=False,
                                     env={"DYN_LORA_PATH": str(tmp / "lora-cache")})
        reference = offline_reference(vllm_python, vllm_model, PROMPTS, MAX_TOKENS, tmp / "reference.log", adapter)
        cluster.frontend()
        wait_healthy(worker, SLOW_START)
        cluster.wait_workers(MODEL, 1)
        yield {"cluster": cluster, "worker": worker, "adapter": adapter,
               "reference": reference_result(reference, SLOW_START), "tokenizer": Tokenizer.from_dir(vllm_model)}
    finally:
        cluster.stop()


def loras_url(env) -> str:
    return f"http://127.0.0.1:{env['worker'].system_port}/v1/loras"


def models(env) -> dict[str, dict]:
    status, body = http_get(env["cluster"].base_url + "/v1/models")
    return {m["id"]: m for m in httpx.Response(status, content=body).json()["data"]}


def test_adapter_through_frontend_matches_vllm_offline_and_then_unloads(env):
    client = openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    load = httpx.post(loras_url(env), json={"lora_name": ADAPTER, "source": {"uri": env["adapter"].as_uri()}},
                      timeout=120)
    assert load.status_code == 200, load.text
    assert httpx.get(loras_url(env)).json()["loras"] == {ADAPTER: load.json()["lora_id"]}
    wait_until(lambda: ADAPTER in models(env), 30, "adapter listed")
    assert models(env)[ADAPTER]["parent"] == MODEL
    decode = env["tokenizer"].decode
    for prompt, expected in zip(PROMPTS, env["reference"]):
        base = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        lora = client.completions.create(model=ADAPTER, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert lora.choices[0].text == decode(expected)
        assert lora.usage.completion_tokens == len(expected)
        assert lora.choices[0].text != base.choices[0].text
        # The base model's blocks for this very prompt are cached; the adapter must not hit them.
        assert not (lora.usage.prompt_tokens_details and lora.usage.prompt_tokens_details.cached_tokens)
    unload = httpx.delete(f"{loras_url(env)}/{ADAPTER}", timeout=60)
    assert unload.status_code == 200 and unload.json()["status"] == "success"
    wait_until(lambda: ADAPTER not in models(env), 30, "adapter unlisted")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=ADAPTER, prompt=PROMPTS[0], max_tokens=2)
    assert client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=2).usage.completion_tokens == 2

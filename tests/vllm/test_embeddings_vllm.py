"""`/v1/embeddings` through the frontend to `python -m dynamo.vllm --runner pooling
--convert embed` (vLLM's pooling runner on the tiny Llama, built offline): vectors equal
vLLM's own offline embeddings; a generation-only model answers 404."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.vllm.conftest import BLOCK_SIZE, MAX_MODEL_LEN, MODEL, reference_result, start_offline, worker_beside_reference

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

PROMPTS = [[6 + (i * 17 + k * 5) % 4000 for i in range(12 + 3 * k)] for k in range(3)]


def offline_embeddings(python: Path, model: Path, log_path: Path) -> subprocess.Popen:
    return start_offline(python, "offline_embeddings.py", [str(model), json.dumps(PROMPTS), str(BLOCK_SIZE),
                                                           str(MAX_MODEL_LEN)], log_path)


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-embed")
    with worker_beside_reference(tmp, vllm_model, vllm_python, ["--runner", "pooling", "--convert", "embed"],
                                 lambda log: offline_embeddings(vllm_python, vllm_model, log)) as (cluster, reference):
        yield {"cluster": cluster, "reference": reference_result(reference)}


@pytest.fixture()
def client(env):
    return openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x", max_retries=0, timeout=180)


def test_embeddings_equal_vllm_offline(env, client):
    resp = client.embeddings.create(model=MODEL, input=PROMPTS)
    assert [d.index for d in resp.data] == [0, 1, 2]
    for ours, theirs in zip(resp.data, env["reference"]):
        assert np.allclose(ours.embedding, theirs, atol=1e-4)
    assert resp.usage.prompt_tokens == sum(len(p) for p in PROMPTS)
    one = client.embeddings.create(model=MODEL, input=PROMPTS[0], encoding_format="base64")
    raw = base64.b64decode(one.data[0].embedding) if isinstance(one.data[0].embedding, str) else None
    vector = list(struct.unpack(f"<{len(raw) // 4}f", raw)) if raw else one.data[0].embedding
    assert np.allclose(vector, env["reference"][0], atol=1e-4)


def test_text_input_and_generation_refused(client):
    resp = client.embeddings.create(model=MODEL, input=["hello world", "the cat"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == len(resp.data[1].embedding) > 0
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)


def test_rerank_on_an_embedding_model_is_the_cosine_of_the_embeddings(env, client):
    """A bi-encoder's /v1/rerank (as vLLM scores one): each document's cosine with the query, best first."""
    query, documents = "the cat", ["a cat sat", "stock prices fell", "the cat"]
    resp = httpx.post(env["cluster"].base_url + "/v1/rerank", timeout=180,
                      json={"model": MODEL, "query": query, "documents": documents, "return_documents": False})
    assert resp.status_code == 200, resp.text
    vectors = [np.array(d.embedding) for d in client.embeddings.create(model=MODEL, input=[query, *documents]).data]
    want = [float(vectors[0] @ v / np.linalg.norm(vectors[0]) / np.linalg.norm(v)) for v in vectors[1:]]
    results = resp.json()
    assert [r["index"] for r in results] == sorted(range(3), key=lambda i: -want[i]) and results[0]["index"] == 2
    assert np.allclose([r["score"] for r in results], sorted(want, reverse=True), atol=1e-4)
    scored = httpx.post(env["cluster"].base_url + "/v1/score", timeout=180,
                        json={"model": MODEL, "text_1": query, "text_2": documents}).json()
    assert np.allclose([d["score"] for d in scored["data"]], want, atol=1e-4)

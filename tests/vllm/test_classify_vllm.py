"""`/v1/classify` and `/v1/pooling` through the frontend to `python -m dynamo.vllm --classify-worker`
(vLLM's pooling runner on a tiny random-weight LlamaForSequenceClassification with three labels,
`dynamo.llm.tiny_classifier`, built offline): probabilities equal vLLM's own offline `classify`, labels
come from the model's id2label, `use_activation: false` gives the logits they were made from, the
pooling route answers the same vectors, and generation is refused."""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.vllm.conftest import (
    BLOCK_SIZE, MAX_MODEL_LEN, MODEL, build_model, reference_result, start_offline, worker_beside_reference,
)

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.timeout(1800)]

PROMPTS = [[6 + (i * 23 + k * 7) % 4000 for i in range(10 + 4 * k)] for k in range(3)]
LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def classifier(vllm_python, tmp_path_factory) -> Path:
    return build_model(vllm_python, tmp_path_factory, "tiny_classifier")


@pytest.fixture(scope="module")
def env(vllm_python, classifier, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-classify")

    def offline(log: Path) -> subprocess.Popen:
        return start_offline(vllm_python, "offline_classify.py", [str(classifier), json.dumps(PROMPTS),
                                                                   str(BLOCK_SIZE), str(MAX_MODEL_LEN)], log)

    with worker_beside_reference(tmp, classifier, vllm_python, ["--classify-worker"], offline) as (cluster, ref):
        yield {"url": cluster.base_url, "reference": reference_result(ref)}


def post(env, path: str, body: dict) -> httpx.Response:
    return httpx.post(env["url"] + path, json={"model": MODEL, **body}, timeout=180)


def test_classify_equals_vllm_offline(env):
    resp = post(env, "/v1/classify", {"input": PROMPTS})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and body["id"].startswith("classify-") and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for ours, theirs in zip(body["data"], env["reference"]):
        assert ours["num_classes"] == 3 and np.allclose(ours["probs"], theirs, atol=1e-4)
        assert math.isclose(sum(ours["probs"]), 1.0, abs_tol=1e-4)
        assert ours["label"] == LABELS[int(np.argmax(ours["probs"]))]
    assert body["usage"]["prompt_tokens"] == sum(len(p) for p in PROMPTS)


def test_logits_without_activation_and_text_input(env):
    probs = post(env, "/v1/classify", {"input": PROMPTS[0]}).json()["data"][0]["probs"]
    raw = post(env, "/v1/classify", {"input": PROMPTS[0], "use_activation": False}).json()["data"][0]["probs"]
    assert not math.isclose(sum(raw), 1.0, abs_tol=1e-3) or raw != probs
    assert np.allclose(np.exp(raw) / np.exp(raw).sum(), probs, atol=1e-4)  # softmax of the logits
    text = post(env, "/v1/classify", {"input": ["a fine day", "a dreadful day"]}).json()["data"]
    assert len(text) == 2 and all(d["label"] in LABELS for d in text)


def test_pooling_answers_the_same_vectors(env):
    body = post(env, "/v1/pooling", {"input": PROMPTS}).json()
    assert body["id"].startswith("pool-") and [d["object"] for d in body["data"]] == ["pooling"] * 3
    for ours, theirs in zip(body["data"], env["reference"]):
        assert np.allclose(ours["data"], theirs, atol=1e-4)
    packed = post(env, "/v1/pooling", {"input": PROMPTS[0], "encoding_format": "base64"}).json()["data"][0]["data"]
    raw = base64.b64decode(packed)
    assert np.allclose(struct.unpack(f"<{len(raw) // 4}f", raw), env["reference"][0], atol=1e-4)
    refused = post(env, "/v1/pooling", {"input": PROMPTS[0], "task": "embed"})
    assert refused.status_code == 400 and "does not serve the embed task" in refused.json()["error"]["message"]


def test_embeddings_and_generation_are_refused(env):
    assert post(env, "/v1/embeddings", {"input": "hi"}).status_code == 404
    chat = post(env, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code == 400

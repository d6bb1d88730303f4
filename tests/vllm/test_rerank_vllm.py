"""`/v1/rerank` through the frontend to `python -m dynamo.vllm --classify-worker` serving a cross-encoder
(a tiny random-weight LlamaForSequenceClassification with one label, `dynamo.llm.tiny_classifier --labels
LABEL_0`, built offline): the scores equal vLLM's own offline `LLM.score` for the same query and documents
(vLLM pairs them its way; the frontend builds the pairs from the card's format), best first, as NVIDIA
Dynamo's bare array, one request's pairs sent to the worker as one batch; `top_n`, `return_documents`, Dynamo's refusals and a document over the context. And a
BERT cross-encoder (`dynamo.llm.tiny_bert`), whose pairs carry segment ids: equal to vLLM's scores too,
which the same tokens without their segments are not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from dynamo.llm.rerank_pairs import PairFormat, pair_tokens, truncate_to_tokens
from dynamo.llm.tokenizer import Tokenizer
from tests.vllm.conftest import (
    BLOCK_SIZE, MAX_MODEL_LEN, MODEL, VenvProc, build_model, metrics, reference_result, start_offline,
    worker_beside_reference,
)

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.timeout(1800)]

QUERY = "what is a panda?"
DOCUMENTS = ["hi", "The giant panda is a bear species endemic to China.", "pandas is a python library",
             "Bamboo makes up most of a panda's diet.", "a fine day for a walk"]


@pytest.fixture(scope="module")
def reranker(vllm_python, tmp_path_factory) -> Path:
    return build_model(vllm_python, tmp_path_factory, "tiny_classifier", "--labels", "LABEL_0")


@pytest.fixture(scope="module")
def env(vllm_python, reranker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-rerank")

    def offline(log: Path) -> subprocess.Popen:
        return start_offline(vllm_python, "offline_score.py", [str(reranker), QUERY, json.dumps(DOCUMENTS),
                                                                str(BLOCK_SIZE), str(MAX_MODEL_LEN)], log)

    with worker_beside_reference(tmp, reranker, vllm_python, ["--classify-worker"], offline) as (cluster, ref):
        worker = next(p for p in cluster.procs if isinstance(p, VenvProc))
        yield {"url": cluster.base_url, "reference": reference_result(ref), "worker": worker}


@pytest.fixture(scope="module")
def bert_model(vllm_python, tmp_path_factory) -> Path:
    return build_model(vllm_python, tmp_path_factory, "tiny_bert")


@pytest.fixture(scope="module")
def bert_env(vllm_python, bert_model, tmp_path_factory):
    tmp, model = tmp_path_factory.mktemp("vllm-rerank-bert"), bert_model

    def offline(log: Path) -> subprocess.Popen:
        return start_offline(vllm_python, "offline_score.py", [str(model), QUERY, json.dumps(DOCUMENTS),
                                                                str(BLOCK_SIZE), str(MAX_MODEL_LEN)], log)

    with worker_beside_reference(tmp, model, vllm_python, ["--classify-worker"], offline) as (cluster, ref):
        yield {"url": cluster.base_url, "reference": reference_result(ref), "model": model}


def post(env, path: str, body: dict) -> httpx.Response:
    return httpx.post(env["url"] + path, json={"model": MODEL, **body}, timeout=180)


def test_scores_equal_vllm_offline_best_first(env):
    resp = post(env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})
    assert resp.status_code == 200, resp.text
    results = resp.json()
    assert isinstance(results, list) and sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    reference = env["reference"]
    assert len(set(np.round(reference, 6))) == len(DOCUMENTS)  # distinct: the order below is meaningful
    for r in results:
        assert set(r) == {"score", "index", "document"} and r["document"] == DOCUMENTS[r["index"]]
        assert np.isclose(r["score"], reference[r["index"]], atol=1e-4), (r, reference)
    assert [r["index"] for r in results] == sorted(range(len(DOCUMENTS)), key=lambda i: -reference[i])


def handled(worker) -> float:
    """The requests the worker's request plane has handled (Dynamo's `dynamo_component_requests_total`)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics(worker).splitlines()
               if line.startswith("dynamo_component_requests_total"))


def test_a_requests_pairs_reach_the_worker_as_one_batch(env):
    """The card says the worker reads batches: one request's five pairs are one wire request to the one
    worker (scored as vLLM scores them: the test above); a lone pair is a plain request."""
    before = handled(env["worker"])
    assert post(env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS}).status_code == 200
    assert handled(env["worker"]) - before == 1
    assert post(env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS[:1]}).status_code == 200
    assert handled(env["worker"]) - before == 2


def test_top_n_and_without_documents(env):
    best = post(env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS}).json()
    two = post(env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False})
    assert two.status_code == 200, two.text
    assert two.json() == [{"score": r["score"], "index": r["index"]} for r in best[:2]]


def test_vllms_rerank_and_score_routes(env):
    """vLLM's own shapes: /v2/rerank and /rerank (Jina's, Cohere's), /v1/score (one text against each)."""
    reference = env["reference"]
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -reference[i])
    for path in ("/v2/rerank", "/rerank"):
        resp = post(env, path, {"query": QUERY, "documents": DOCUMENTS, "top_n": 3})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["id"].startswith("rerank-") and body["model"] == MODEL and body["usage"]["prompt_tokens"] > 0
        assert [r["index"] for r in body["results"]] == best[:3]
        for r in body["results"]:
            assert r["document"] == {"text": DOCUMENTS[r["index"]]}
            assert np.isclose(r["relevance_score"], reference[r["index"]], atol=1e-4)
    scored = post(env, "/v1/score", {"text_1": QUERY, "text_2": DOCUMENTS})
    assert scored.status_code == 200, scored.text
    data = scored.json()["data"]
    assert [d["index"] for d in data] == list(range(len(DOCUMENTS))) and {d["object"] for d in data} == {"score"}
    assert np.allclose([d["score"] for d in data], reference, atol=1e-4)
    pairwise = post(env, "/score", {"text_1": [QUERY, QUERY], "text_2": DOCUMENTS[:2]}).json()["data"]
    assert np.allclose([d["score"] for d in pairwise], reference[:2], atol=1e-4)


def test_classify_on_the_same_model_gives_the_score(env):
    """The score is the one-label model's sigmoid output: /v1/classify on the pair's text agrees in kind."""
    body = post(env, "/v1/classify", {"input": "a panda"}).json()["data"][0]
    assert body["num_classes"] == 1 and 0.0 < body["probs"][0] < 1.0


@pytest.mark.parametrize("body, param, message", [
    ({"query": "  ", "documents": ["d"]}, "query", "Query cannot be empty or whitespace only"),
    ({"query": "q", "documents": []}, "documents", "Documents cannot be empty"),
    ({"query": "q", "documents": ["d", " "]}, "documents", "Each document cannot be empty or whitespace only"),
    ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n", "Parameter 'top_n' must be larger than 0"),
])
def test_dynamos_refusals(env, body, param, message):
    resp = post(env, "/v1/rerank", body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["param"], error["message"], error["type"]) == (param, message, "invalid_request_error")


def test_a_document_over_the_context_is_a_400_naming_it(env):
    resp = post(env, "/v1/rerank", {"query": QUERY, "documents": ["short", "panda " * 3000]})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == ("documents[1]", "context_length_exceeded"), error
    assert post(env, "/v1/rerank", {"query": QUERY, "documents": ["short"]}).status_code == 200  # still serving


def test_a_bert_cross_encoder_reads_its_segments(bert_env):
    resp = post(bert_env, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})
    assert resp.status_code == 200, resp.text
    reference = bert_env["reference"]
    for r in resp.json():
        assert np.isclose(r["score"], reference[r["index"]], atol=1e-4), (r, reference)
    pairs = pair_tokens(Tokenizer.from_dir(bert_env["model"]), [(QUERY, d) for d in DOCUMENTS],
                        PairFormat(token_type_ids=True))
    assert all(p.type_ids for p in pairs)  # the model reads them: the worker said so on its card
    plain = post(bert_env, "/v1/classify", {"input": [p.ids for p in pairs]}).json()["data"]  # tokens, no segments
    assert not np.allclose([d["probs"][0] for d in plain], reference, atol=1e-3)


CUT_TEXTS = ["The giant panda is a bear species endemic to China.", "naïve café, déjà vu — ünïcödé!", "a  b\n\nc"]
CUT_LIMITS = [1, 2, 5, 9, 100]


@pytest.mark.parametrize("model", ["reranker", "bert"])
def test_texts_are_cut_to_a_token_limit_as_vllm_cuts_them(model, reranker, bert_model, vllm_python):
    model_dir = reranker if model == "reranker" else bert_model
    out = subprocess.run([str(vllm_python), str(Path(__file__).with_name("offline_truncate.py")), str(model_dir),
                          json.dumps(CUT_TEXTS), json.dumps(CUT_LIMITS)], capture_output=True, timeout=600, check=True)
    theirs = json.loads(out.stdout.decode().strip().splitlines()[-1])
    tokenizer = Tokenizer.from_dir(model_dir)
    assert [[truncate_to_tokens(tokenizer, t, n) for n in CUT_LIMITS] for t in CUT_TEXTS] == theirs


def test_vllms_token_limits_cut_the_documents_first(env, reranker):
    tokenizer = Tokenizer.from_dir(reranker)
    cut = [truncate_to_tokens(tokenizer, d, 4) for d in DOCUMENTS]
    assert cut != DOCUMENTS
    want = {r["index"]: r["score"] for r in post(env, "/v1/rerank", {"query": QUERY, "documents": cut}).json()}
    got = post(env, "/v2/rerank", {"query": QUERY, "documents": DOCUMENTS, "max_tokens_per_doc": 4}).json()["results"]
    assert {r["index"]: r["relevance_score"] for r in got} == pytest.approx(want, abs=1e-5)
    assert [r["document"]["text"] for r in got] == [DOCUMENTS[r["index"]] for r in got]  # the documents as sent
    too_many = post(env, "/v1/score", {"text_1": QUERY, "text_2": DOCUMENTS, "max_tokens_per_query": MAX_MODEL_LEN})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens_per_query"

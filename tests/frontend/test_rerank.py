"""The scoring routes' requests and answers: `/v1/rerank`'s checks (NVIDIA Dynamo's messages, a 400
naming the field), its decoding and the answer's order (best first, equal scores in the documents'
order, `top_n`, `return_documents`); vLLM's `/v2/rerank` and `/v1/score` requests (one text against
each or pairwise, the spellings, their refusals); the bi-encoder's cosine."""

from __future__ import annotations

import math

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from dynamo.frontend.errors import ApiError
from dynamo.frontend.rerank import (
    RerankRequest, decode_rerank, decode_rerank_v2, decode_score, ranked,
)
from dynamo.frontend.scoring import Limits, Pair, cosine
from dynamo.llm.tokenizer import Tokenizer


def request(**kw) -> RerankRequest:
    return RerankRequest(**{"model": "m", "query": "q", "documents": ["a", "b", "c"], **kw})


def test_defaults_as_dynamo():
    req = decode_rerank(b'{"model": "m", "query": "q", "documents": ["a"]}')
    assert (req.top_n, req.return_documents, req.nvext) == (None, True, None)
    req.validate()


@pytest.mark.parametrize("kw, param, message", [
    ({"query": " \n"}, "query", "Query cannot be empty or whitespace only"),
    ({"documents": []}, "documents", "Documents cannot be empty"),
    ({"documents": ["a", "\t"]}, "documents", "Each document cannot be empty or whitespace only"),
    ({"top_n": 0}, "top_n", "Parameter 'top_n' must be larger than 0"),
    ({"top_n": -3}, "top_n", "Parameter 'top_n' must be larger than 0"),
    ({"documents": ["d"] * 2049}, "documents", "at most 2048 documents per request"),
])
def test_refusals_name_the_field(kw, param, message):
    with pytest.raises(ApiError) as err:
        request(**kw).validate()
    assert (err.value.status, err.value.param, err.value.message) == (400, param, message)


@pytest.mark.parametrize("body", [b'{"model": "m", "query": "q"}', b'{"model": "m", "query": 3, "documents": ["a"]}',
                                  b'{"model": "m", "query": "q", "documents": [1]}', b'not json'])
def test_malformed_bodies_are_400s(body):
    with pytest.raises(ApiError) as err:
        decode_rerank(body)
    assert err.value.status == 400


def test_best_first_ties_in_document_order():
    out = ranked([0.2, 0.9, 0.2, 0.5], request(documents=["a", "b", "c", "d"]))
    assert out == [{"score": 0.9, "index": 1, "document": "b"}, {"score": 0.5, "index": 3, "document": "d"},
                   {"score": 0.2, "index": 0, "document": "a"}, {"score": 0.2, "index": 2, "document": "c"}]


def test_top_n_and_without_documents():
    assert ranked([0.1, 0.3, 0.2], request(top_n=2, return_documents=False)) == [
        {"score": 0.3, "index": 1}, {"score": 0.2, "index": 2}]
    assert len(ranked([0.1, 0.3, 0.2], request(top_n=10))) == 3  # more than there are: all of them


def test_cosine():
    assert math.isclose(cosine([1.0, 0.0], [2.0, 0.0]), 1.0)
    assert math.isclose(cosine([1.0, 0.0], [0.0, 3.0]), 0.0, abs_tol=1e-12)
    assert math.isclose(cosine([1.0, 1.0], [-1.0, -1.0]), -1.0)
    assert cosine([0.0, 0.0], [1.0, 2.0]) == 0.0  # a zero vector is similar to nothing


def test_vllm_rerank_shape():
    req = decode_rerank_v2(b'{"model": "m", "query": "q", "documents": "one"}')
    req.validate()
    assert req.documents == ["one"] and req.top_n == 0
    for body, param in ((b'{"model": "m", "query": "q", "documents": ["a"], "top_n": -1}', "top_n"),
                        (b'{"model": "m", "query": "", "documents": ["a"]}', "query")):
        with pytest.raises(ApiError) as err:
            decode_rerank_v2(body).validate()
        assert (err.value.status, err.value.param) == (400, param)


def test_score_one_against_each_and_pairwise():
    assert decode_score(b'{"model": "m", "text_1": "q", "text_2": ["a", "b"]}').pairs() == [
        Pair("q", "a", "text_2[0]", "text_1"), Pair("q", "b", "text_2[1]", "text_1")]
    assert decode_score(b'{"model": "m", "queries": ["q", "r"], "documents": ["a", "b"]}').pairs() == [
        Pair("q", "a", "documents[0]", "queries[0]"), Pair("r", "b", "documents[1]", "queries[1]")]
    assert decode_score(b'{"model": "m", "data_1": ["q"], "data_2": "a"}').pairs() == [Pair("q", "a", "data_2[0]",
                                                                                           "data_1")]
    assert len(decode_score(b'{"model": "m", "queries": "q", "items": ["a", "b", "c"]}').pairs()) == 3


@pytest.mark.parametrize("body, param", [
    (b'{"model": "m", "text_1": "q"}', "text_1"),
    (b'{"model": "m", "text_1": ["q", "r"], "text_2": ["a", "b", "c"]}', "text_1"),
    (b'{"model": "m", "text_1": [], "text_2": ["a"]}', "text_1"),
    (b'{"model": "m", "text_1": "q", "text_2": []}', "text_2"),
    (b'{"model": "m", "text_1": "q", "text_2": ["a", " "]}', "text_1"),
])
def test_score_refusals(body, param):
    with pytest.raises(ApiError) as err:
        decode_score(body).validate()
    assert (err.value.status, err.value.param) == (400, param)


def test_token_limits_are_checked_against_the_context_and_cut_each_side():
    Limits(0, 0).check(2048)
    Limits(2047, 1).check(2048)
    for limits, param in ((Limits(-1, 0), "max_tokens_per_query"), (Limits(0, 2048), "max_tokens_per_doc")):
        with pytest.raises(ApiError) as err:
            limits.check(2048)
        assert (err.value.status, err.value.param) == (400, param)
    pairs = [Pair("q q q", "d d d d", "documents[0]")]
    assert Limits().apply(None, pairs) is pairs  # no limits: nothing tokenized

    words = HFTokenizer(WordLevel({"[UNK]": 0, "q": 1, "d": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    assert Limits(1, 2).apply(Tokenizer(words), pairs) == [Pair("q", "d d", "documents[0]")]

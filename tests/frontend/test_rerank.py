"""`/v1/rerank`'s request checks (NVIDIA Dynamo's messages, a 400 naming the field), its decoding,
and the answer's order: best first, equal scores in the documents' order, `top_n`, `return_documents`;
the bi-encoder's cosine."""

from __future__ import annotations

import math

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.rerank import RerankRequest, cosine, decode_rerank, ranked


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

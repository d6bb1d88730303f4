"""The scoring routes' requests and answers (the scores themselves: `scoring.py`):
- `/v1/rerank`, as NVIDIA Dynamo 1.6 serves it (SGLang's format): `{"model", "query", "documents",
  "top_n", "return_documents"}` in, a bare JSON array of `{"score", "index", "document"}` out, best first;
- `/v2/rerank` and `/rerank`, as vLLM serves them (Jina's and Cohere's format, what RAG toolkits' rerank
  clients send): `{"model", "query", "documents", "top_n"}` in, `{"id", "model", "usage", "results":
  [{"index", "document": {"text"}, "relevance_score"}]}` out, best first;
- `/v1/score` and `/score`, vLLM's: `text_1` and `text_2` (or `data_1`/`data_2`, `queries`/`documents`,
  `queries`/`items`), one text against many or pairwise, in, `{"data": [{"index", "object": "score",
  "score"}], "usage"}` out, in the pairs' order.
vLLM's routes take its `max_tokens_per_query` / `max_tokens_per_doc` (each text cut to so many tokens first).
Equal scores keep the documents' order. A model whose workers serve no scores answers 404."""

from __future__ import annotations

import time
import uuid

import msgspec

from dynamo.frontend.embeddings import MAX_INPUTS
from dynamo.frontend.errors import bad_request
from dynamo.frontend.openai import decode_body
from dynamo.frontend.scoring import Limits, Pair, score_pairs


def _check_texts(query: str, documents: list[str]) -> None:
    """Dynamo's checks, with its messages, then the size limit the other pooling routes keep."""
    if not query.strip():
        raise bad_request("Query cannot be empty or whitespace only", "query")
    if not documents:
        raise bad_request("Documents cannot be empty", "documents")
    if any(not document.strip() for document in documents):
        raise bad_request("Each document cannot be empty or whitespace only", "documents")
    if len(documents) > MAX_INPUTS:
        raise bad_request(f"at most {MAX_INPUTS} documents per request", "documents")


def _pairs(query: str, documents: list[str]) -> list[Pair]:
    return [Pair(query, d, f"documents[{i}]") for i, d in enumerate(documents)]


def _best_first(scores: list[float], top_n: int | None) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n or None]


class RerankRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Dynamo's `NvCreateRerankRequest`."""

    model: str
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True
    nvext: dict | None = None

    def validate(self) -> None:
        _check_texts(self.query, self.documents)
        if self.top_n is not None and self.top_n < 1:
            raise bad_request("Parameter 'top_n' must be larger than 0", "top_n")


def ranked(scores: list[float], req: RerankRequest) -> list[dict]:
    """Dynamo's answer: best first, cut to `top_n`, the texts unless `return_documents` is false."""
    if req.return_documents:
        return [{"score": scores[i], "index": i, "document": req.documents[i]} for i in _best_first(scores, req.top_n)]
    return [{"score": scores[i], "index": i} for i in _best_first(scores, req.top_n)]


async def rerank(dispatcher, entry, req: RerankRequest) -> list[dict]:
    return ranked((await score_pairs(dispatcher, entry, _pairs(req.query, req.documents))).scores, req)


class VllmRerankRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """vLLM's `RerankRequest` (Jina's and Cohere's shape); `top_n` 0: every document."""

    model: str
    query: str
    documents: list[str] | str
    top_n: int = 0
    max_tokens_per_query: int = 0  # each text cut to so many tokens first (0: not cut)
    max_tokens_per_doc: int = 0

    def validate(self) -> None:
        if isinstance(self.documents, str):
            self.documents = [self.documents]
        _check_texts(self.query, self.documents)
        if self.top_n < 0:
            raise bad_request("`top_n` must not be negative", "top_n")

    def limits(self) -> Limits:
        return Limits(self.max_tokens_per_query, self.max_tokens_per_doc)


def _usage(tokens: int) -> dict:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


async def rerank_v2(dispatcher, entry, req: VllmRerankRequest) -> dict:
    scored = await score_pairs(dispatcher, entry, _pairs(req.query, req.documents), req.limits())
    results = [{"index": i, "document": {"text": req.documents[i]}, "relevance_score": scored.scores[i]}
               for i in _best_first(scored.scores, req.top_n)]
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": entry.name, "usage": _usage(scored.prompt_tokens),
            "results": results}


class ScoreRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """vLLM's score request, in any of its spellings: the first texts against the second, one against
    each or pairwise."""

    model: str
    text_1: str | list[str] | None = None
    text_2: str | list[str] | None = None
    data_1: str | list[str] | None = None
    data_2: str | list[str] | None = None
    queries: str | list[str] | None = None
    documents: str | list[str] | None = None
    items: str | list[str] | None = None
    max_tokens_per_query: int = 0  # each first text cut to so many tokens first (0: not cut)
    max_tokens_per_doc: int = 0  # ... each second text

    def limits(self) -> Limits:
        return Limits(self.max_tokens_per_query, self.max_tokens_per_doc)

    def sides(self) -> tuple[list[str], list[str], str, str]:
        """The two lists of texts and their field names."""
        for first, second in (("text_1", "text_2"), ("data_1", "data_2"), ("queries", "documents"),
                              ("queries", "items")):
            one, two = getattr(self, first), getattr(self, second)
            if one is not None and two is not None:
                return ([one] if isinstance(one, str) else one), ([two] if isinstance(two, str) else two), first, second
        raise bad_request("give `text_1` and `text_2` (or `data_1`/`data_2`, `queries`/`documents`, `queries`/`items`)",
                          "text_1", "missing_required_parameter")

    def pairs(self) -> list[Pair]:
        ones, twos, first, second = self.sides()
        if not ones or not twos:
            raise bad_request(f"`{first if not ones else second}` must not be empty", first if not ones else second)
        if len(ones) not in (1, len(twos)):
            raise bad_request(f"`{first}` must hold one text or as many as `{second}` ({len(twos)}), not {len(ones)}",
                              first)
        if len(twos) > MAX_INPUTS:
            raise bad_request(f"at most {MAX_INPUTS} texts per request", second)
        if any(not t.strip() for t in (*ones, *twos)):
            raise bad_request("texts must not be empty or whitespace only", first)
        if len(ones) == 1:  # one text against each
            return [Pair(ones[0], two, f"{second}[{i}]", first) for i, two in enumerate(twos)]
        return [Pair(one, two, f"{second}[{i}]", f"{first}[{i}]") for i, (one, two) in enumerate(zip(ones, twos))]

    def validate(self) -> None:
        self.pairs()


async def score(dispatcher, entry, req: ScoreRequest) -> dict:
    scored = await score_pairs(dispatcher, entry, req.pairs(), req.limits())
    return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": entry.name,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scored.scores)],
            "usage": {**_usage(scored.prompt_tokens), "completion_tokens": 0}}


_decoders = {kind: msgspec.json.Decoder(kind) for kind in (RerankRequest, VllmRerankRequest, ScoreRequest)}


def decode_rerank(body: bytes) -> RerankRequest:
    return decode_body(_decoders[RerankRequest], body)


def decode_rerank_v2(body: bytes) -> VllmRerankRequest:
    return decode_body(_decoders[VllmRerankRequest], body)


def decode_score(body: bytes) -> ScoreRequest:
    return decode_body(_decoders[ScoreRequest], body)

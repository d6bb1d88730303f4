"""`/v1/rerank`, as NVIDIA Dynamo 1.6 serves it (SGLang's format): a query and candidate documents in,
the documents' relevance scores out, best first, as a bare JSON array of `{"score", "index",
"document"}` (`top_n` keeps the best n; `return_documents: false` leaves the texts out).

Scored two ways, by what the model's workers serve (as vLLM scores):
- a cross-encoder (a one-label classification model; its card's `rerank` entry says how it reads a
  pair): each (query, document) pair is one wire request (task "classify"), its score the model's
  sigmoid output, routed like any request, so one request's documents spread over the workers;
- an embedding model: the cosine similarity of the query's and each document's embeddings.
A model whose workers serve neither answers 404, as the other pooling routes do."""

from __future__ import annotations

import asyncio
import math
import uuid

import msgspec

from dynamo.frontend.embeddings import MAX_INPUTS, embed_all
from dynamo.frontend.errors import bad_prompt, bad_request
from dynamo.frontend.openai import decode_body
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.llm.rerank_pairs import PairFormat

TOKENIZE_OFF_LOOP_CHARS = 64 * 1024  # above this much text, pairs are tokenized in a thread


class RerankRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True
    nvext: dict | None = None

    def validate(self) -> None:
        """Dynamo's checks, with its messages, then the size limit the other pooling routes keep."""
        if not self.query.strip():
            raise bad_request("Query cannot be empty or whitespace only", "query")
        if not self.documents:
            raise bad_request("Documents cannot be empty", "documents")
        if any(not document.strip() for document in self.documents):
            raise bad_request("Each document cannot be empty or whitespace only", "documents")
        if self.top_n is not None and self.top_n < 1:
            raise bad_request("Parameter 'top_n' must be larger than 0", "top_n")
        if len(self.documents) > MAX_INPUTS:
            raise bad_request(f"at most {MAX_INPUTS} documents per request", "documents")


_decoder = msgspec.json.Decoder(RerankRequest)


def decode_rerank(body: bytes) -> RerankRequest:
    return decode_body(_decoder, body)


def _wire(entry, request_id: str, ids: list[int], task: str, extra: dict | None = None) -> PreprocessedRequest:
    return PreprocessedRequest(request_id=request_id, model=entry.name, token_ids=ids,
                               stop_conditions=StopConditions(max_tokens=1), task=task, extra_args=extra)


async def _tokenized(req: RerankRequest, tokenize):
    """`tokenize()` (PreprocessError: a 400), in a thread when the request carries much text."""
    try:
        if len(req.query) * len(req.documents) + sum(map(len, req.documents)) > TOKENIZE_OFF_LOOP_CHARS:
            return await asyncio.to_thread(tokenize)
        return tokenize()
    except PreprocessError as exc:
        raise bad_prompt(exc) from None


async def cross_scores(dispatcher, entry, req: RerankRequest, fmt: PairFormat) -> list[float]:
    """A cross-encoder's score of each (query, document) pair."""
    prompts = await _tokenized(req, lambda: entry.pipeline.pair_prompts(req.query, req.documents, fmt))
    rid = "rerank-" + uuid.uuid4().hex
    requests = [_wire(entry, f"{rid}-{i}", p.ids, "classify", {"token_type_ids": p.type_ids} if p.type_ids else None)
                for i, p in enumerate(prompts)]
    return [vector[0] for vector in await embed_all(dispatcher, entry, requests)]


def _embedding_prompts(pipeline, req: RerankRequest) -> list[list[int]]:
    out = []
    for i, text in enumerate([req.query, *req.documents]):
        param = "query" if i == 0 else f"documents[{i - 1}]"
        ids = pipeline.completion_prompt_ids(text, param)
        pipeline.max_tokens_for(ids, 1, param)
        out.append(ids)
    return out


async def cosine_scores(dispatcher, entry, req: RerankRequest) -> list[float]:
    """An embedding model's scores: the cosine similarity of the query's and each document's vectors."""
    prompts = await _tokenized(req, lambda: _embedding_prompts(entry.pipeline, req))
    rid = "rerank-" + uuid.uuid4().hex
    requests = [_wire(entry, f"{rid}-{i}", ids, "embed") for i, ids in enumerate(prompts)]
    query, *documents = await embed_all(dispatcher, entry, requests)
    return [cosine(query, d) for d in documents]


def cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0


def ranked(scores: list[float], req: RerankRequest) -> list[dict]:
    """The results, best first (equal scores in the documents' order), cut to `top_n`."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:req.top_n]
    if req.return_documents:
        return [{"score": scores[i], "index": i, "document": req.documents[i]} for i in order]
    return [{"score": scores[i], "index": i} for i in order]


async def rerank(dispatcher, entry, req: RerankRequest) -> list[dict]:
    if "rerank" in entry.card.model_type:  # a cross-encoder; a card that says no more reads pairs by default
        fmt = PairFormat.from_card(entry.card.runtime_config.runtime_data) or PairFormat()
        return ranked(await cross_scores(dispatcher, entry, req, fmt), req)
    return ranked(await cosine_scores(dispatcher, entry, req), req)

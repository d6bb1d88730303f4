"""Relevance scores of (query, document) pairs, for the scoring routes (`rerank.py`: Dynamo's
`/v1/rerank`, vLLM's `/v2/rerank` and `/v1/score`), computed by what the model's workers serve, as vLLM
scores:
- a cross-encoder (a one-label classification model; its card's `rerank` entry says how it reads a
  pair): each pair is one pooling input (task "classify"), its score the model's sigmoid output; a
  request's pairs go to the workers in a few batches (`llm/pooling_batch.py`), one or more per worker;
- an embedding model: the cosine similarity of the two texts' embeddings (each distinct text embedded
  once)."""

from __future__ import annotations

import asyncio
import math
import uuid

import msgspec

from dynamo.frontend.embeddings import TOKENIZE_OFF_LOOP_CHARS, embed_all, pooling_prompt, pooling_request
from dynamo.frontend.errors import bad_prompt, bad_request
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.rerank_pairs import PairFormat, truncate_to_tokens



class Pair(msgspec.Struct, frozen=True):
    query: str
    document: str
    param: str  # the request field a refusal of this pair (or its document) names
    query_param: str = "query"  # ... and of its query, alone (an embedding model reads it alone)


class Limits(msgspec.Struct, frozen=True):
    """vLLM's `max_tokens_per_query` / `max_tokens_per_doc`: each text cut to so many tokens first (0: not)."""

    query: int = 0
    document: int = 0

    def check(self, context_length: int) -> None:
        for value, name in ((self.query, "max_tokens_per_query"), (self.document, "max_tokens_per_doc")):
            if value < 0 or value >= context_length:
                raise bad_request(f"`{name}` ({value}) must be at least 0 and less than the model's context length "
                                  f"({context_length})", name)

    def apply(self, tokenizer, pairs: list[Pair]) -> list[Pair]:
        if not (self.query or self.document):
            return pairs
        cut: dict[tuple[str, int], str] = {}

        def cut_to(text: str, limit: int) -> str:
            if not limit:
                return text
            if (text, limit) not in cut:
                cut[(text, limit)] = truncate_to_tokens(tokenizer, text, limit)
            return cut[(text, limit)]
        return [Pair(cut_to(p.query, self.query), cut_to(p.document, self.document), p.param, p.query_param)
                for p in pairs]


NO_LIMITS = Limits()


class Scored(msgspec.Struct, frozen=True):
    scores: list[float]  # one per pair, in order
    prompt_tokens: int  # what the engines read for them (usage)


async def score_pairs(dispatcher, entry, pairs: list[Pair], limits: Limits = NO_LIMITS) -> Scored:
    """`dispatcher`: pinned to the card served when the request came (`pooling_api.PooledStreams`); the pairs are
    tokenized by that card's pipeline, taken here before any wait, whatever the entry follows by then."""
    pipeline, card = entry.pipeline, entry.card
    limits.check(pipeline.context_length)
    if "rerank" in card.model_type:  # a cross-encoder; a card that says no more reads pairs by default
        fmt = PairFormat.from_card(card.runtime_config.runtime_data) or PairFormat()
        return await _cross_scores(dispatcher, entry, pipeline, pairs, fmt, limits)
    return await _cosine_scores(dispatcher, entry, pipeline, pairs, limits)


async def _tokenized(pairs: list[Pair], tokenize):
    """`tokenize()` (PreprocessError: a 400), in a thread when the pairs carry much text."""
    try:
        if sum(len(p.query) + len(p.document) for p in pairs) > TOKENIZE_OFF_LOOP_CHARS:
            return await asyncio.to_thread(tokenize)
        return tokenize()
    except PreprocessError as exc:
        raise bad_prompt(exc) from None


def _pair_prompts(pipeline, pairs: list[Pair], fmt: PairFormat, limits: Limits):
    pairs = limits.apply(pipeline.tokenizer, pairs)
    return pipeline.pair_prompts([(p.query, p.document) for p in pairs], fmt, [p.param for p in pairs])


async def _cross_scores(dispatcher, entry, pipeline, pairs: list[Pair], fmt: PairFormat, limits: Limits) -> Scored:
    prompts = await _tokenized(pairs, lambda: _pair_prompts(pipeline, pairs, fmt, limits))
    rid = "score-" + uuid.uuid4().hex
    requests = [pooling_request(entry.name, f"{rid}-{i}", p.ids, "classify",
                                {"token_type_ids": p.type_ids} if p.type_ids else None)
                for i, p in enumerate(prompts)]
    vectors = await embed_all(dispatcher, entry, requests)
    return Scored([v[0] for v in vectors], sum(len(p.ids) for p in prompts))


def _text_prompts(pipeline, pairs: list[Pair], limits: Limits) -> tuple[list[Pair], dict[str, list[int]]]:
    """The pairs (cut to the limits) and each distinct text's prompt, keyed by the text."""
    pairs = limits.apply(pipeline.tokenizer, pairs)
    out: dict[str, list[int]] = {}
    for text, param in [(t, param) for p in pairs for t, param in ((p.query, p.query_param), (p.document, p.param))]:
        if text not in out:
            out[text] = pooling_prompt(pipeline, text, param)
    return pairs, out


async def _cosine_scores(dispatcher, entry, pipeline, pairs: list[Pair], limits: Limits) -> Scored:
    pairs, prompts = await _tokenized(pairs, lambda: _text_prompts(pipeline, pairs, limits))
    rid = "score-" + uuid.uuid4().hex
    requests = [pooling_request(entry.name, f"{rid}-{i}", ids, "embed") for i, ids in enumerate(prompts.values())]
    vectors = dict(zip(prompts, await embed_all(dispatcher, entry, requests)))
    return Scored([cosine(vectors[p.query], vectors[p.document]) for p in pairs],
                  sum(len(ids) for ids in prompts.values()))


def cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0

"""The pooling routes beside `/v1/embeddings` (`embeddings.py`), as vLLM and NVIDIA Dynamo serve them
from a classification model's workers (`dynamo.vllm --classify-worker`, or any pooling worker whose
model classifies): `/v1/classify` (per input: the label of the most probable class, the class
probabilities and their count) and `/v1/pooling` (per input: the pooled vector, the model's own task
unless `task` names another). Each input is one pooling input (task "classify" / "embed"), sent in
batches as `/v1/embeddings` sends them. A model whose workers serve neither answers 404, as `/v1/embeddings` does.
The scoring routes (`rerank.py`: `/v1/rerank`, `/v2/rerank`, `/rerank`, `/v1/score`, `/score`) are served
from the same handler.

`PoolingRoute` is what the frontend's one pooling handler needs per route (`http_app.pooled`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import msgspec

from dynamo.frontend.embeddings import (EmbeddingRequest, decode_embeddings, embed, embed_all, encode_vector,
                                        wire_inputs)
from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.openai import decode_body
from dynamo.frontend.rerank import decode_rerank, decode_rerank_v2, decode_score, rerank, rerank_v2, score
from dynamo.llm.protocol import BACKGROUND_TIER, RoutingHints

POOLING_TASKS = ("classify", "embed")


class ClassifyRequest(EmbeddingRequest, kw_only=True, omit_defaults=True):
    """vLLM's ClassificationRequest (completion form): `input` as embeddings take it."""

    use_activation: bool | None = None  # False: the raw logits instead of probabilities
    task: str | None = None  # /v1/pooling only: "classify" or "embed" (default: the model's own)

    def validate(self) -> None:
        super().validate()
        if self.task is not None and self.task not in POOLING_TASKS:
            raise bad_request(f"`task` must be one of {', '.join(POOLING_TASKS)}", "task")


_classify_decoder = msgspec.json.Decoder(ClassifyRequest)


def decode_classify(body: bytes) -> ClassifyRequest:
    return decode_body(_classify_decoder, body)


async def pooled_vectors(dispatcher, entry, req: ClassifyRequest, task: str) -> tuple[list[list[float]], int]:
    """One vector per input (the worker's pooled output for `task`) and the prompt tokens they took."""
    requests = await wire_inputs(req, entry.pipeline, uuid.uuid4().hex)
    for wire in requests:
        wire.task = task
        if req.use_activation is not None:
            wire.extra_args = {"use_activation": req.use_activation}
    return await embed_all(dispatcher, entry, requests), sum(len(r.token_ids) for r in requests)


def _body(prefix: str, entry, data: list[dict], tokens: int) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": entry.name,
            "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}}


async def classify(dispatcher, entry, req: ClassifyRequest) -> dict:
    if req.task is not None:
        raise bad_request("`task` is a /v1/pooling parameter", "task", "unsupported_parameter")
    labels = entry.pipeline.labels  # the pipeline its inputs are tokenized by (read before any wait)
    vectors, tokens = await pooled_vectors(dispatcher, entry, req, "classify")
    data = [{"index": i, "label": labels.get(max(range(len(v)), key=v.__getitem__)) if v else None, "probs": v,
             "num_classes": len(v)} for i, v in enumerate(vectors)]
    return _body("classify", entry, data, tokens)


async def pool(dispatcher, entry, req: ClassifyRequest) -> dict:
    task = req.task or ("classify" if "classify" in entry.card.model_type else "embed")
    if task == "classify" and "classify" not in entry.card.model_type or \
            task == "embed" and "embedding" not in entry.card.model_type:
        raise bad_request(f"model {entry.name!r} does not serve the {task} task", "task", "unsupported_value")
    vectors, tokens = await pooled_vectors(dispatcher, entry, req, task)
    data = [{"index": i, "object": "pooling", "data": encode_vector(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return _body("pool", entry, data, tokens)


class PooledStreams:
    """The dispatcher as one pooling request's wire requests use it: pinned to the card its inputs were tokenized
    for, taken with the pipeline before tokenizing (only that card's workers take them: a switch meanwhile is a 503
    `model_card_changed`, never another tokenizer's ids on the new card's workers), and for a Batch API line's
    (`background`), routed in the background tier (BACKGROUND_TIER), below every client's, as the line's chat
    requests are."""

    def __init__(self, dispatcher, card: str, background: bool = False) -> None:
        self._dispatcher, self.card, self.background = dispatcher, card, background

    def stream(self, entry, request, handle):
        if self.background:
            hints = msgspec.structs.replace(request.routing or RoutingHints(), strict_priority=BACKGROUND_TIER)
            request = msgspec.structs.replace(request, routing=hints)
        return self._dispatcher.stream(entry, request, handle, self.card)


@dataclass(frozen=True)
class PoolingRoute:
    """A pooling route: its metrics label, the model types that serve it (any one), its body decoder
    and the answer builder (dispatcher, entry, request) -> body."""

    endpoint: str
    model_types: tuple[str, ...]
    decode: Callable[[bytes], Any]
    answer: Callable[[Any, Any, Any], Awaitable[dict | list]]

    def served_by(self, model_types) -> bool:
        return any(kind in model_types for kind in self.model_types)

    def not_served(self, model: str) -> ApiError:
        """The model exists but serves nothing this route answers: for this route it is not found."""
        return ApiError(404, f"Model not found: `{model}` serves no {self.endpoint}", "invalid_request_error",
                        "model", "model_not_found")


EMBEDDINGS = PoolingRoute("embeddings", ("embedding",), decode_embeddings, embed)
CLASSIFY = PoolingRoute("classify", ("classify",), decode_classify, classify)
POOLING = PoolingRoute("pooling", ("pooling",), decode_classify, pool)
SCORERS = ("rerank", "embedding")  # a cross-encoder's scores, or an embedding model's cosines
RERANK = PoolingRoute("rerank", SCORERS, decode_rerank, rerank)  # Dynamo's (SGLang's) shape
RERANK_V2 = PoolingRoute("rerank", SCORERS, decode_rerank_v2, rerank_v2)  # vLLM's (Jina's, Cohere's) shape
SCORE = PoolingRoute("score", SCORERS, decode_score, score)
ROUTES = {"/v1/embeddings": EMBEDDINGS, "/v1/classify": CLASSIFY, "/v1/pooling": POOLING, "/v1/rerank": RERANK,
          "/v2/rerank": RERANK_V2, "/rerank": RERANK_V2, "/v1/score": SCORE, "/score": SCORE}

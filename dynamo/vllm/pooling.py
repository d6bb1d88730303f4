"""Pooling requests on vLLM (task "embed" or "classify"): one input, or a batch of them
(`llm/pooling_batch.py`), each through `AsyncLLM.encode`; and what a pooling engine puts on its card
(its model types, how a cross-encoder reads a pair, that it reads batches)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from dynamo.llm.pooling_batch import BatchItem, split_batch
from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest
from dynamo.llm.rerank_pairs import PairFormat, first_document_token

log = logging.getLogger(__name__)


def _pooling_params(request: PreprocessedRequest, token_type_ids: list[int] | None) -> Any:
    from vllm import PoolingParams

    extra = request.extra_args or {}
    kwargs: dict[str, Any] = {}
    if extra.get("use_activation") is not None:
        kwargs["use_activation"] = extra["use_activation"]
    if token_type_ids:
        kwargs["extra_kwargs"] = {"compressed_token_type_ids": first_document_token(token_type_ids)}
    return PoolingParams(task=request.task, **kwargs)


async def _pooled(engine: Any, request: PreprocessedRequest, item: BatchItem, request_id: str) -> list[float]:
    """One input's vector: `encode` run to its end (closing the stream early aborts it in the engine)."""
    from vllm.inputs import TokensPrompt

    stream = engine.encode(TokensPrompt(prompt_token_ids=item.token_ids), _pooling_params(request, item.token_type_ids),
                           request_id)
    try:
        async for result in stream:
            if result.finished:
                return result.outputs.data.tolist()
    finally:
        await stream.aclose()
    raise RuntimeError("the engine ended a pooling request without its output")


async def stream_pooling(engine: Any, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
    """A pooling request: one output per input, as each is ready (a batch's carry their `index`), the
    vector a classification's class probabilities (its logits with `use_activation: false`), or the
    embedding; a cross-encoder's pair goes with the segment ids of its tokens, as vLLM's scoring passes them."""
    items = split_batch(request)
    if not request.pooling_lengths:
        yield LLMEngineOutput(embedding=await _pooled(engine, request, items[0], request_id),
                              finish_reason=FinishReason.STOP)
        return
    tasks = {asyncio.ensure_future(_pooled(engine, request, item, f"{request_id}-{i}")): i
             for i, item in enumerate(items)}
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            outs = [LLMEngineOutput(embedding=task.result(), index=tasks[task]) for task in done]
            if not pending:
                outs[-1].finish_reason = FinishReason.STOP
            for out in outs:
                yield out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def cross_encoder_format(engine: Any, tasks: Any) -> PairFormat | None:
    """How this engine's model reads a (query, document) pair, when it scores one as vLLM's scoring API
    does: a classification model with one label; None otherwise (or for a model that composes its own
    score prompt, which /v1/rerank's pairs would not match)."""
    config = engine.model_config
    if "classify" not in tasks or getattr(config.hf_config, "num_labels", 0) != 1:
        return None
    from vllm.model_executor.model_loader import get_model_cls
    from vllm.model_executor.models.interfaces import supports_score_template

    if supports_score_template(get_model_cls(config)):
        log.warning("%s builds its own score prompt: /v1/rerank is not served by this worker", config.model)
        return None
    tokenizer = engine.tokenizer
    segments = tokenizer is not None and "token_type_ids" in tokenizer(text="a", text_pair="b")
    return PairFormat(separator=config.use_sep_token, token_type_ids=segments)


def pooling_model_types(tasks: Any, cross_encoder: bool = False) -> list[str]:
    """The card's model types for a pooling engine's supported tasks (embeddings, classification, both;
    a cross-encoder's relevance scores too)."""
    types = [kind for task, kind in (("embed", "embedding"), ("classify", "classify")) if task in tasks]
    return [*types, "pooling", *(["rerank"] if cross_encoder else [])] if types else ["embedding"]

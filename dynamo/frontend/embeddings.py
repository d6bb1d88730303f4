"""`/v1/embeddings`: the OpenAI embeddings request, its conversion to one wire request
per input (task "embed", routed like any request; sent in batches where workers read them,
`llm/pooling_batch.py`), and the response body. Served only
by models whose card lists the `embedding` type (a pooling worker, e.g. `dynamo.vllm
--runner pooling`); other models answer 404 as Dynamo does.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from itertools import accumulate
from typing import Any

import msgspec

from dynamo.frontend import errors
from dynamo.frontend.dispatch import aclose_quietly
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.errors import bad_prompt, bad_request
from dynamo.frontend.openai import decode_body
from dynamo.llm.pooling_batch import POOLING_BATCH_KEY, batch_request, batch_sizes
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.protocol import PreprocessedRequest, StopConditions

MAX_INPUTS = 2048


class EmbeddingRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    input: str | list[Any]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """One entry per embedding: text or token ids."""
        data = self.input
        if isinstance(data, str):
            return [data]
        if not data:
            raise bad_request("`input` must not be empty", "input")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in data):
            return [data]
        if all(isinstance(x, str) for x in data) or all(
                isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in data):
            return list(data)
        raise bad_request("`input` must be a string, a list of strings, token ids or lists of token ids", "input",
                          "invalid_type")

    def validate(self) -> None:
        if self.encoding_format not in ("float", "base64"):
            raise bad_request("`encoding_format` must be float or base64", "encoding_format")
        if self.dimensions is not None:
            raise bad_request("`dimensions` is not supported: the model's full embedding is returned",
                              "dimensions", "unsupported_parameter")
        if len(self.inputs()) > MAX_INPUTS:
            raise bad_request(f"at most {MAX_INPUTS} inputs per request", "input")

    def to_requests(self, pipeline, request_id: str) -> list[PreprocessedRequest]:
        out = []
        for i, item in enumerate(self.inputs()):
            try:
                ids = pooling_prompt(pipeline, item, "input")
            except PreprocessError as exc:
                raise bad_prompt(exc, "input") from None
            out.append(pooling_request(pipeline.name, f"{request_id}-{i}", ids, "embed"))
        return out


TOKENIZE_OFF_LOOP_CHARS = 64 * 1024  # above this much text, prompts are tokenized in a thread


async def wire_inputs(req: "EmbeddingRequest", pipeline, request_id: str) -> list[PreprocessedRequest]:
    """`req.to_requests`: its inputs tokenized, in a thread when they carry much text (2,048 inputs of 8 KB
    are seconds of tokenizing that would hold every other stream)."""
    if sum(len(item) for item in req.inputs() if isinstance(item, str)) > TOKENIZE_OFF_LOOP_CHARS:
        return await asyncio.to_thread(req.to_requests, pipeline, request_id)
    return req.to_requests(pipeline, request_id)


def pooling_prompt(pipeline, item: str | list[int], param: str) -> list[int]:
    """One pooling input's token ids (text or ids), PreprocessError naming `param` when they are empty or do
    not fit the context (a pooled input may fill all of it, as vLLM allows: nothing is generated after it)."""
    return pipeline.pooling_prompt_ids(item, param)


def pooling_request(model: str, request_id: str, ids: list[int], task: str,
                    extra: dict | None = None) -> PreprocessedRequest:
    """The wire request of one pooling input (task "embed" or "classify"); its answer is one vector."""
    return PreprocessedRequest(request_id=request_id, model=model, token_ids=ids,
                               stop_conditions=StopConditions(max_tokens=1), task=task, extra_args=extra)


decoder = msgspec.json.Decoder(EmbeddingRequest)


def decode_embeddings(body: bytes) -> EmbeddingRequest:
    return decode_body(decoder, body)


async def wire_vectors(dispatcher, entry, request: PreprocessedRequest) -> list[list[float]]:
    """The pooled vectors one wire request answers: its input's, or each input's of a batch
    (`llm/pooling_batch.py`), in order."""
    vectors: list[list[float] | None] = [None] * len(request.pooling_lengths or [0])
    handle = RequestHandle()
    gen = dispatcher.stream(entry, request, handle)
    try:
        async for batch in gen:
            for out in batch:
                if out.error is not None:
                    raise errors.engine_error(out.error)
                if out.embedding is not None and 0 <= (out.index or 0) < len(vectors):
                    vectors[out.index or 0] = out.embedding
    finally:
        await aclose_quietly(gen)
    if any(v is None for v in vectors):
        raise errors.no_embedding()
    return vectors  # type: ignore[return-value]


async def embed_all(dispatcher, entry, requests: list[PreprocessedRequest]) -> list[list[float]]:
    """Each request's pooled vector, in order, the requests run side by side (one failing cancels the rest):
    in a few batches, one or more per worker, where the model's workers read batches; else one by one."""
    if len(requests) > 1 and entry.card.runtime_config.runtime_data.get(POOLING_BATCH_KEY):
        sizes = batch_sizes([len(r.token_ids) for r in requests], len(entry.decode_workers()))
        starts = accumulate(sizes[:-1], initial=0)  # each batch's first request
        calls = [wire_vectors(dispatcher, entry, batch_request(requests[a:a + n])) for a, n in zip(starts, sizes)]
    else:
        calls = [wire_vectors(dispatcher, entry, r) for r in requests]
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return [vector for part in await asyncio.gather(*tasks) for vector in part]
    finally:
        for task in tasks:
            task.cancel()


async def embed(dispatcher, entry, req: EmbeddingRequest) -> dict:
    requests = await wire_inputs(req, entry.pipeline, "embd-" + uuid.uuid4().hex)
    vectors = await embed_all(dispatcher, entry, requests)
    tokens = sum(len(r.token_ids) for r in requests)
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": entry.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def encode_vector(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector

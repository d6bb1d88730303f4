"""Pooling inputs in batches on the wire (frontend -> worker): a client request's many inputs (an
embeddings request's texts, a rerank request's pairs) travel as a few wire requests, one per worker,
instead of one each.

A batch is a `PreprocessedRequest` (task "embed" or "classify") whose `token_ids` are its inputs' ids one
after another and whose `pooling_lengths` say where each ends; a per-token `token_type_ids` list in its
`extra_args` is split the same way. The worker answers one `LLMEngineOutput` per input, its `index` the
input's place in the batch. Only workers whose card says so (`POOLING_BATCH_KEY` in its runtime data)
are sent batches; the frontend sends any other one input per request.

This module owns the batch's layout: how the frontend cuts a request's inputs into batches
(`batch_sizes`), joins them (`batch_request`) and how a worker reads them back (`split_batch`)."""

from __future__ import annotations

import msgspec

from dynamo.llm.protocol import PreprocessedRequest

POOLING_BATCH_KEY = "pooling_batch"  # the card's runtime data: true where the worker reads batches
# A batch stays a modest message and a modest share of one worker's queue: a large request is cut
# into more batches than there are workers, so the router spreads them by load.
MAX_BATCH_INPUTS = 128
MAX_BATCH_TOKENS = 32 * 1024


def batch_sizes(lengths: list[int], workers: int, max_inputs: int = MAX_BATCH_INPUTS,
                max_tokens: int = MAX_BATCH_TOKENS) -> list[int]:
    """How many consecutive inputs (of these token lengths) go in each batch: one batch per worker
    (so the router can give each worker a share), more where a share would pass about `max_inputs`
    inputs or `max_tokens` tokens, never more batches than inputs; the batches even in tokens."""
    count, total = len(lengths), sum(lengths)
    if count == 0:
        return []
    parts = min(count, max(1, workers, -(-total // max_tokens), -(-count // max_inputs)))
    sizes: list[int] = []
    start, done = 0, 0
    for part in range(parts - 1):
        goal = total * (part + 1) / parts
        end, done = start + 1, done + lengths[start]
        last_end = count - (parts - 1 - part)  # leave one input at least for each batch after this one
        while end < last_end and done + lengths[end] / 2 <= goal:
            done += lengths[end]
            end += 1
        sizes.append(end - start)
        start = end
    sizes.append(count - start)
    return sizes


def batch_request(requests: list[PreprocessedRequest]) -> PreprocessedRequest:
    """One wire request carrying these pooling requests (the same model, task and options; a per-token
    `token_type_ids` each, or none)."""
    first = requests[0]
    if len(requests) == 1:
        return first
    ids = [t for r in requests for t in r.token_ids]
    extra = dict(first.extra_args) if first.extra_args else None
    if extra is not None and "token_type_ids" in extra:
        extra["token_type_ids"] = [t for r in requests for t in (r.extra_args or {})["token_type_ids"]]
    return msgspec.structs.replace(first, request_id=f"{first.request_id}+{len(requests)}", token_ids=ids,
                                   extra_args=extra, pooling_lengths=[len(r.token_ids) for r in requests])


class BatchItem(msgspec.Struct, frozen=True):
    token_ids: list[int]
    token_type_ids: list[int] | None


def split_batch(request: PreprocessedRequest) -> list[BatchItem]:
    """A batch's inputs, in order (ValueError: lengths that do not add up to its tokens)."""
    lengths = request.pooling_lengths or [len(request.token_ids)]
    ids = request.token_ids
    types = (request.extra_args or {}).get("token_type_ids") or None
    if any(n <= 0 for n in lengths) or sum(lengths) != len(ids) or (types is not None and len(types) != len(ids)):
        raise ValueError("pooling_lengths must be positive and add up to the request's token ids")
    items, start = [], 0
    for n in lengths:
        items.append(BatchItem(ids[start:start + n], types[start:start + n] if types is not None else None))
        start += n
    return items

"""The standalone KV router service's query boundary (`python -m dynamo.router`'s `best_worker_id` and
`get_overlap_scores` endpoints): what a caller sends and what it gets back, msgpack on the request plane."""

from __future__ import annotations

import msgspec

from dynamo.llm.kv_events.hashing import MediaSalt


class RouteQuery(msgspec.Struct, kw_only=True, omit_defaults=True):
    token_ids: list[int]
    lora_name: str | None = None
    cache_salt: str | None = None  # the prompt's KV namespace (nvext.cache_salt)
    media_salt: MediaSalt | None = None  # where its images start and which they are (PreprocessedRequest's)
    router_config_override: dict[str, float] | None = None


# What `best_worker_id` takes: our query, or what NVIDIA Dynamo's standalone router takes (its handler's
# one request argument is the prompt's token ids, and it answers with the worker id alone). A list
# decodes from a msgpack array and the struct from a map, so the payload says which form it is.
BestWorkerQuery = RouteQuery | list[int]


class BestWorker(msgspec.Struct, kw_only=True):
    worker_id: int
    dp_rank: int
    overlap_blocks: int


class OverlapScores(msgspec.Struct, kw_only=True):
    block_size: int
    scores: list[BestWorker]  # every known (worker, dp_rank), 0 when nothing matches


encoder = msgspec.msgpack.Encoder()

"""What a prompt shares with each worker's KV cache, as one routing decision sees it: the prompt's
block hashes in its KV namespace (LoRA adapter, cache salt, media) and the cached leading blocks
per worker that one index lookup found for them.

`PromptHashes` owns the hashes remembered per request id between a selection and its booking (a
request is hashed once however often it is scored); `PrefixMatch` is one lookup's result. A
caller that needs the overlaps before selecting (the kv policy classifying a request by its
uncached prompt) hands the match to `KvRouter.select`, so each decision looks the prompt up once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import NamedTuple, Sequence

from dynamo.llm.kv_events.hashing import MediaSalt, block_hashes, sequence_hashes
from dynamo.router.indexer import WorkerKey

_CACHE_SIZE = 4096  # requests remembered between selection and booking


class Hashed(NamedTuple):
    """A prompt's hashes: its length, local block hashes and sequence hashes, and the seconds
    spent on each kind of hash (0 for a prompt remembered from before)."""

    isl: int
    local: list[int]
    seq: list[int]
    seconds: tuple[float, float]


class PrefixMatch(NamedTuple):
    """One index lookup of a prompt: `overlaps[(worker, dp_rank)]` = its leading blocks cached there
    (device tier), with the time each phase took since `started` (time.perf_counter)."""

    hashed: Hashed
    overlaps: dict[WorkerKey, int]
    lookup_seconds: float
    started: float

    @property
    def isl(self) -> int:
        return self.hashed.isl

    def uncached_tokens(self, keys: set[WorkerKey], block_size: int) -> int:
        """Prompt tokens left to prefill on the worker among `keys` that caches most of it."""
        best = max((n for key, n in self.overlaps.items() if key in keys), default=0)
        return max(self.isl - best * block_size, 0)


class PromptHashes:
    """Prompts hashed per request id, kept from a request's selection to its booking."""

    def __init__(self, block_size: int, size: int = _CACHE_SIZE) -> None:
        self.block_size = block_size
        self._size = size
        # request id -> (isl, local hashes, sequence hashes, namespace)
        self._cache: OrderedDict[str, tuple[int, list[int], list[int], tuple]] = OrderedDict()

    def hash(self, token_ids: Sequence[int], request_id: str | None, lora_name: str | None,
             cache_salt: str | None = None, media: MediaSalt | None = None) -> Hashed:
        """The prompt's hashes in its KV namespace; a request's own remembered ones when its prompt
        and namespace are unchanged."""
        namespace = (lora_name, cache_salt, media)
        if request_id is not None:
            cached = self._cache.get(request_id)
            if cached is not None and cached[0] == len(token_ids) and cached[3] == namespace:
                return Hashed(*cached[:3], (0.0, 0.0))
        started = time.perf_counter()
        local = block_hashes(token_ids, self.block_size, lora_name, cache_salt, media)
        hashed = time.perf_counter()
        seq = sequence_hashes(local)
        seconds = (hashed - started, time.perf_counter() - hashed)
        if request_id is not None:
            self._cache[request_id] = (len(token_ids), local, seq, namespace)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return Hashed(len(token_ids), local, seq, seconds)

    def forget(self, request_id: str) -> None:
        self._cache.pop(request_id, None)

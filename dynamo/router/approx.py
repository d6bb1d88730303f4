"""Approximate indexer for engines that publish no KV events (`--no-router-kv-events`).

After each routing decision the router records that the chosen (worker, dp_rank) now
holds the request's blocks. Entries expire after a TTL (default 120 s) and the tree is
bounded: above `max_tree_size` nodes the oldest entries are dropped until it is at
`prune_target_ratio` of the bound. The sequence hash of each block stands in for the
engine's external block hash, so the same `RadixTree` serves both modes.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Sequence

from dynamo.router.indexer import OverlapScores, RadixTree, WorkerKey


class ApproxIndexer:
    def __init__(
        self,
        ttl_secs: float = 120.0,
        max_tree_size: int = 2**20,
        prune_target_ratio: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tree = RadixTree()
        self.ttl = ttl_secs
        self.max_tree_size = max_tree_size
        self.prune_target = max(0, int(max_tree_size * prune_target_ratio))
        self._clock = clock
        # (expires_at, key, seq_hashes) in insertion order; `_expiry` holds the live deadline
        # of each (key, seq_hash) so refreshed entries are skipped lazily when popped.
        self._queue: deque[tuple[float, WorkerKey, Sequence[int]]] = deque()
        self._expiry: dict[tuple[WorkerKey, int], float] = {}
        self.expired_blocks = 0
        self.pruned_blocks = 0

    def record(self, key: WorkerKey, local_hashes: Sequence[int], seq_hashes: Sequence[int]) -> None:
        """Remember that `key` caches this prompt's full blocks (refreshes their TTL)."""
        n = min(len(local_hashes), len(seq_hashes))
        if n == 0:
            return
        now = self._clock()
        self._expire(now)
        deadline = now + self.ttl
        self.tree.store(key, None, zip(seq_hashes[:n], local_hashes[:n]))
        expiry = self._expiry
        for seq_hash in seq_hashes[:n]:
            expiry[(key, seq_hash)] = deadline
        self._queue.append((deadline, key, tuple(seq_hashes[:n])))
        if self.tree.node_count > self.max_tree_size:
            self._prune()

    def find_matches(self, local_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        self._expire(self._clock())
        return self.tree.find_matches(local_hashes, early_exit)

    def remove_worker(self, worker_id: int) -> None:
        for key in [k for k in self.tree.keys() if k[0] == worker_id]:
            self.tree.remove_key(key)
        self._expiry = {k: v for k, v in self._expiry.items() if k[0][0] != worker_id}

    def tree_sizes(self) -> dict[WorkerKey, int]:
        return self.tree.tree_sizes()

    def _expire(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            self.expired_blocks += self._drop(*queue.popleft())

    def _prune(self) -> None:
        queue = self._queue
        while queue and self.tree.node_count > self.prune_target:
            self.pruned_blocks += self._drop(*queue.popleft())

    def _drop(self, deadline: float, key: WorkerKey, seq_hashes: Sequence[int]) -> int:
        """Remove the entry's blocks whose deadline was not refreshed; deepest first."""
        expiry = self._expiry
        stale = []
        for seq_hash in reversed(seq_hashes):
            if expiry.get((key, seq_hash)) == deadline:
                del expiry[(key, seq_hash)]
                stale.append(seq_hash)
        if stale:
            self.tree.remove(key, stale)
        return len(stale)

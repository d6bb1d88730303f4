"""Approximate indexer for engines that publish no KV events (`--no-router-kv-events`).

After each routing decision the router records that the chosen (worker, dp_rank) now
holds the request's blocks. How long it is believed to keep them is the retention policy
(`--router-approximate-cache-policy`, as NVIDIA Dynamo names it):
- `ttl` (default): entries expire after a TTL (default 120 s);
- `lru`: each rank holds as many blocks as its KV cache has (`capacity(key)`, from its model
  card or load reports), the least recently routed ones leaving first, as an engine's prefix
  cache evicts; a rank whose capacity is not known yet falls back to the TTL.
Either way the tree is bounded: above `max_tree_size` nodes the oldest entries are dropped
until it is at `prune_target_ratio` of the bound. The sequence hash of each block stands in
for the engine's external block hash, so the same `RadixTree` serves both modes.
"""

from __future__ import annotations

import itertools
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
        capacity: Callable[[WorkerKey], int | None] | None = None,
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
        self.evicted_blocks = 0
        # lru: per rank, its entries oldest first (stamped from a counter, not a clock) and its live blocks
        self.capacity = capacity
        self._lru: dict[WorkerKey, deque[tuple[float, WorkerKey, Sequence[int]]]] = {}
        self._held: dict[WorkerKey, int] = {}
        self._stamps = itertools.count(1)

    def record(self, key: WorkerKey, local_hashes: Sequence[int], seq_hashes: Sequence[int]) -> None:
        """Remember that `key` caches this prompt's full blocks (refreshes their TTL or recency)."""
        n = min(len(local_hashes), len(seq_hashes))
        if n == 0:
            return
        now = self._clock()
        self._expire(now)
        cap = self.capacity(key) if self.capacity is not None else None
        stamp = -float(next(self._stamps)) if cap else now + self.ttl  # lru stamps never come due
        self.tree.store(key, None, zip(seq_hashes[:n], local_hashes[:n]))
        expiry = self._expiry
        held = self._held.get(key, 0)
        for seq_hash in seq_hashes[:n]:
            held += (key, seq_hash) not in expiry
            expiry[(key, seq_hash)] = stamp
        self._held[key] = held
        entry = (stamp, key, tuple(seq_hashes[:n]))
        if cap:
            self._evict(key, entry, cap)
        else:
            self._queue.append(entry)
        if self.tree.node_count > self.max_tree_size:
            self._prune()

    def _evict(self, key: WorkerKey, entry: tuple[float, WorkerKey, Sequence[int]], cap: int) -> None:
        """LRU within the rank's capacity: drop its least recently routed entries until it fits."""
        order = self._lru.setdefault(key, deque())
        order.append(entry)
        while self._held[key] > cap and len(order) > 1:
            self.evicted_blocks += self._drop(*order.popleft())
        if len(order) > 2 * self._held[key] + 64:  # refreshed entries left behind: compact
            expiry = self._expiry
            self._lru[key] = deque(e for e in order if any(expiry.get((key, h)) == e[0] for h in e[2]))

    def find_matches(self, local_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        self._expire(self._clock())
        return self.tree.find_matches(local_hashes, early_exit)

    def remove_worker(self, worker_id: int) -> None:
        for key in [k for k in self.tree.keys() if k[0] == worker_id]:
            self.tree.remove_key(key)
        self._expiry = {k: v for k, v in self._expiry.items() if k[0][0] != worker_id}
        for table in (self._lru, self._held):
            for key in [k for k in table if k[0] == worker_id]:
                del table[key]

    def tree_sizes(self) -> dict[WorkerKey, int]:
        """Blocks believed held per rank, as /health and the indexed-blocks metric report them. Expiry
        is otherwise lazy (on the next request), and an idle router must not report blocks whose TTL
        has run out; expiring here costs what the next request would have paid anyway."""
        self._expire(self._clock())
        return self.tree.tree_sizes()

    def _expire(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            self.expired_blocks += self._drop(*queue.popleft())

    def _prune(self) -> None:
        queues = [self._queue, *self._lru.values()]
        for queue in queues:  # TTL entries first (the oldest), then each rank's least recent
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
            self._held[key] = self._held.get(key, 0) - len(stale)
        return len(stale)

"""Paged KV block accounting for the mocker, and the KV events it publishes.

Owns: which full blocks are cached (keyed by chained SequenceHash), who uses them
(refcounts), which are free-but-reusable (an LRU pool evicted oldest-first), and the
private partial tail blocks. Emits `KvStored` for newly stored full blocks,
`KvRemoved` on eviction and `KvCleared` on clear, with monotonic event ids.

External block ids in events are the SequenceHash as u64, as Dynamo's mocker publishes (the engine's
own id); `tokens_hash` is the block's LocalBlockHash, so a router can index them.
With prefix caching off, blocks are anonymous: nothing is reused and no events are
emitted (the cache never holds anything another request could hit).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from dynamo.llm.kv_events.hashing import MediaSalt, block_hashes, sequence_hashes
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvCleared, KvRemoved, KvStored, StoredBlock
from dynamo.mocker.host_tier import HostTier

EventSink = Callable[[KvCacheEvent], None]


def hash_blocks(tokens: Sequence[int], block_size: int, lora_name: str | None = None,
                cache_salt: str | None = None, media: MediaSalt | None = None) -> tuple[list[int], list[int]]:
    """(LocalBlockHashes, SequenceHashes) of the full blocks of `tokens`."""
    local = block_hashes(tokens, block_size, lora_name, cache_salt, media)
    return local, sequence_hashes(local)


def chain_hash(parent: int | None, local: int) -> int:
    """SequenceHash of a block whose predecessor has SequenceHash `parent`."""
    return local if parent is None else sequence_hashes((parent, local))[1]


class KvManager:
    def __init__(
        self,
        capacity: int,
        block_size: int,
        *,
        enable_prefix_caching: bool = True,
        on_event: EventSink | None = None,
        dp_rank: int = 0,
        host_blocks: int = 0,
        on_host_event: EventSink | None = None,
    ) -> None:
        if capacity <= 0 or block_size <= 0:
            raise ValueError("capacity and block_size must be > 0")
        self.capacity = capacity
        self.block_size = block_size
        self.prefix_caching = enable_prefix_caching
        self.on_event = on_event
        self.dp_rank = dp_rank
        self._active: dict[int, int] = {}  # sequence hash -> refcount
        self._inactive: OrderedDict[int, None] = OrderedDict()  # cached, unused; oldest first
        self._anonymous = 0  # full blocks held with prefix caching off
        self._partial = 0  # private partial tail blocks
        self.next_event_id = 1  # Dynamo's mocker numbers its first KV event 1 (tests/compat vectors)
        self.num_evictions = 0
        self.on_host_event = on_host_event
        self.host = HostTier(host_blocks, self._emit_host) if host_blocks and enable_prefix_caching else None

    # ---- accounting -------------------------------------------------------------

    @property
    def num_active_blocks(self) -> int:
        """Blocks in use by some sequence (shared blocks counted once)."""
        return len(self._active) + self._anonymous + self._partial

    @property
    def num_cached_blocks(self) -> int:
        """Free blocks that still hold reusable content."""
        return len(self._inactive)

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out, evicting cached content if necessary."""
        return self.capacity - self.num_active_blocks

    def is_cached(self, seq_hash: int) -> bool:
        return seq_hash in self._active or seq_hash in self._inactive

    def cached_prefix(self, seq_hashes: Sequence[int]) -> int:
        """Number of leading blocks already in the cache (active or reusable)."""
        if not self.prefix_caching:
            return 0
        active, inactive = self._active, self._inactive
        count = 0
        for h in seq_hashes:
            if h not in active and h not in inactive:
                break
            count += 1
        return count

    def host_prefix(self, seq_hashes: Sequence[int], start: int) -> int:
        """Blocks of a prompt past its first `start` that the host tier holds, one after another."""
        return self.host.prefix(seq_hashes, start) if self.host is not None else 0

    def blocks_to_activate(self, seq_hashes: Sequence[int]) -> int:
        """How many more blocks become active if a sequence holding `seq_hashes` is admitted."""
        if not self.prefix_caching:
            return len(seq_hashes)
        active = self._active
        return sum(1 for h in seq_hashes if h not in active)

    # ---- allocation -------------------------------------------------------------

    def acquire(self, seq_hashes: Sequence[int], local_hashes: Sequence[int]) -> bool:
        """Reference the full blocks of a sequence, storing the ones not cached yet.
        Returns False (and changes nothing) if they do not fit."""
        if self.blocks_to_activate(seq_hashes) > self.num_free_blocks:
            return False
        if not self.prefix_caching:
            self._anonymous += len(seq_hashes)
            return True
        active, inactive = self._active, self._inactive
        new: list[int] = []
        for i, h in enumerate(seq_hashes):  # reuse first, so eviction never hits these
            if h in active:
                active[h] += 1
            elif h in inactive:
                del inactive[h]
                active[h] = 1
            else:
                new.append(i)
        self._make_room(len(new))
        for i in new:
            active[seq_hashes[i]] = 1
        if self.host is not None:
            self.host.touch(seq_hashes)
        self._emit_stored(seq_hashes, local_hashes, new)
        return True

    def release(self, seq_hashes: Sequence[int]) -> None:
        """Drop a sequence's references; unused blocks become reusable, leaves first in line
        for eviction (released in reverse order, so a leaf is older than its parent)."""
        if not self.prefix_caching:
            self._anonymous -= len(seq_hashes)
            return
        active, inactive = self._active, self._inactive
        for h in reversed(seq_hashes):
            count = active[h] - 1
            if count:
                active[h] = count
            else:
                del active[h]
                inactive[h] = None

    def alloc_partial(self) -> bool:
        """Reserve a private block for a sequence's partial tail."""
        if self.num_free_blocks < 1:
            return False
        self._make_room(1)
        self._partial += 1
        return True

    def free_partial(self) -> None:
        self._partial -= 1

    def promote(self, parent: int | None, seq_hash: int, local_hash: int) -> None:
        """A sequence's partial tail block became full: it turns into a cached full block
        (deduplicated against an identical block that is already cached)."""
        self._partial -= 1
        if not self.prefix_caching:
            self._anonymous += 1
            return
        active, inactive = self._active, self._inactive
        if seq_hash in active:
            active[seq_hash] += 1
            return
        if seq_hash in inactive:
            del inactive[seq_hash]
            active[seq_hash] = 1
            return
        active[seq_hash] = 1
        if self.on_event is not None or self.host is not None:
            self._emit_run_of(parent, [StoredBlock(block_hash=seq_hash, tokens_hash=local_hash)])

    def clear(self) -> None:
        """Forget all reusable blocks (only allowed when no sequence holds blocks)."""
        if self.num_active_blocks:
            raise RuntimeError(f"cannot clear the KV cache: {self.num_active_blocks} blocks in use")
        self._inactive.clear()
        self._emit(KvCleared())

    # ---- internals --------------------------------------------------------------

    def _make_room(self, count: int) -> None:
        """Evict reusable blocks (oldest first) until `count` blocks are truly free."""
        excess = self.num_active_blocks + len(self._inactive) + count - self.capacity
        if excess <= 0:
            return
        inactive = self._inactive
        victims = [inactive.popitem(last=False)[0] for _ in range(excess)]
        self.num_evictions += excess
        self._emit(KvRemoved(block_hashes=victims))

    def _emit_stored(self, seq_hashes: Sequence[int], local_hashes: Sequence[int], new: list[int]) -> None:
        """One KvStored per run of consecutive new blocks, parented on the block before it."""
        if not new or (self.on_event is None and self.host is None):
            return
        run: list[StoredBlock] = []
        for pos, i in enumerate(new):
            if run and new[pos - 1] != i - 1:
                self._emit_run(seq_hashes, new[pos - len(run)], run)
                run = []
            run.append(StoredBlock(block_hash=seq_hashes[i], tokens_hash=local_hashes[i]))
        self._emit_run(seq_hashes, new[len(new) - len(run)], run)

    def _emit_run(self, seq_hashes: Sequence[int], first: int, run: list[StoredBlock]) -> None:
        self._emit_run_of(seq_hashes[first - 1] if first > 0 else None, run)

    def _emit_run_of(self, parent: int | None, run: list[StoredBlock]) -> None:
        """New device blocks: their event, and written through to the host tier."""
        self._emit(KvStored(parent_hash=parent, blocks=run))
        if self.host is not None:
            self.host.store(parent, run)

    def _emit(self, data: KvStored | KvRemoved | KvCleared, sink: EventSink | None = None) -> None:
        sink = sink or self.on_event
        if sink is None:
            return
        event_id = self.next_event_id  # one sequence for both tiers, as an engine numbers its batches
        self.next_event_id += 1
        sink(KvCacheEvent(event_id=event_id, data=data, dp_rank=self.dp_rank))

    def _emit_host(self, data: KvStored | KvRemoved) -> None:
        if self.on_host_event is not None:
            self._emit(data, self.on_host_event)

"""The mocker's host-memory KV tier (`--num-host-blocks`): vLLM's native CPU offload, as NVIDIA
Dynamo's mocker simulates it. Every full block stored on the device is written through to a host
cache of `capacity` blocks (least recently used out first); a prompt's blocks found there past its
device-cache hit are copied back (host-to-device bandwidth) instead of recomputed. The tier
publishes its own KV events (storage tier `host_pinned`, vLLM's `medium: CPU`), numbered in the
worker's one event sequence, so a router can credit what it holds.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from dynamo.llm.kv_events.protocol import KvRemoved, KvStored, StoredBlock

HostEmit = Callable[[KvStored | KvRemoved], None]


class HostTier:
    def __init__(self, capacity: int, emit: HostEmit) -> None:
        if capacity <= 0:
            raise ValueError("the host tier needs a capacity > 0")
        self.capacity = capacity
        self._emit = emit
        self._blocks: OrderedDict[int, None] = OrderedDict()  # sequence hash; least recently used first

    def __len__(self) -> int:
        return len(self._blocks)

    def prefix(self, seq_hashes: Sequence[int], start: int) -> int:
        """How many blocks of a prompt, from block `start` on, the host holds one after another."""
        blocks, count = self._blocks, 0
        for h in seq_hashes[start:]:
            if h not in blocks:
                break
            count += 1
        return count

    def store(self, parent: int | None, run: Sequence[StoredBlock]) -> None:
        """Write through a run of blocks just stored on the device (`parent`: the block before it).
        Blocks already held are refreshed; new ones evict the least recently used, and each
        stretch of new blocks is one event, parented on the block before it."""
        blocks = self._blocks
        new: list[StoredBlock] = []
        before = parent
        for block in run:
            if block.block_hash in blocks:
                self._flush(before, new)
                blocks.move_to_end(block.block_hash)
                before = block.block_hash
            else:
                new.append(block)
        self._flush(before, new)
        # Newest last, a run's first block last of all: eviction takes leaves before their prefix.
        for block in reversed(run):
            if block.block_hash in blocks:
                blocks.move_to_end(block.block_hash)

    def touch(self, seq_hashes: Sequence[int]) -> None:
        """A prompt reused these blocks on the device: keep them in the host tier too."""
        blocks = self._blocks
        for h in reversed(seq_hashes):
            if h in blocks:
                blocks.move_to_end(h)

    def _flush(self, parent: int | None, new: list[StoredBlock]) -> None:
        if not new:
            return
        if len(new) + (parent is not None) > self.capacity or not self._reachable(parent):
            new.clear()  # nothing could reach these blocks here
            return
        excess = len(self._blocks) + len(new) - self.capacity
        if excess > 0:
            victims = []
            for h in self._blocks:  # least recently used first, sparing the parent they hang from
                if len(victims) == excess:
                    break
                if h != parent:
                    victims.append(h)
            for h in victims:
                del self._blocks[h]
            self._emit(KvRemoved(block_hashes=victims))
        for block in new:
            self._blocks[block.block_hash] = None
        self._emit(KvStored(parent_hash=parent, blocks=list(new)))
        new.clear()

    def _reachable(self, parent: int | None) -> bool:
        return parent is None or parent in self._blocks

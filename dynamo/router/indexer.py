"""KV-cache indexer: which (worker, dp_rank) holds which prefix of which prompt.

Owns the radix tree built from `RouterEvent`s (see `dynamo.llm.kv_events.protocol`). The tree is
walked by LocalBlockHash (content hash of one block); the engine's external block hashes
are only per-worker ids kept in a lookup table, so engines may use any hash algorithm.

Speed notes (pure Python): every (worker, dp_rank) gets a small integer *slot*, and a
node's worker set is an int bitmask over slots. `find_matches` then costs one dict lookup
and one big-int AND per block; a worker leaves the match at the first depth whose mask
lacks its bit, and only then do we touch Python objects for it. Nodes are msgspec Structs,
built in C (a third of a Python `__init__`'s cost), and a stored block costs one lookup-table
operation (`setdefault`) unless its external hash is being re-pointed.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Iterable, Sequence

import msgspec

from dynamo.llm.kv_events.protocol import KvCacheEvent, KvCleared, KvRemoved, KvStored, RouterEvent

WorkerKey = tuple[int, int]  # (worker_id, dp_rank)

OK = "ok"
GAP = "gap"
PARENT_NOT_FOUND = "parent_not_found"
BLOCK_NOT_FOUND = "block_not_found"
UNSUPPORTED_TIER = "unsupported_tier"
# Offloaded tiers (a vLLM CPU-offload connector's `medium: CPU`, KVBM's host and disk pools): indexed
# apart from the device tier; a hit there costs a copy back, less than a prefill (router credit weights).
LOWER_TIERS = ("host_pinned", "disk")


class Node(msgspec.Struct, eq=False):
    """One block of the tree. `mask` bit i set <=> slot i holds this block."""

    parent: Node | None
    local_hash: int
    mask: int
    children: dict[int, Node]

    def __repr__(self) -> str:  # the generated repr would recurse through parent and children
        return f"Node(local_hash={self.local_hash}, mask={self.mask:#x}, children={len(self.children)})"


class OverlapScores:
    """`scores[(worker, dp)]` = consecutive leading blocks cached; `tree_sizes` = blocks held
    by each scored worker (computed on first access: the hot path rarely needs it)."""

    __slots__ = ("scores", "_tree", "_sizes")

    def __init__(self, scores: dict[WorkerKey, int], tree: RadixTree | None = None) -> None:
        self.scores = scores
        self._tree = tree
        self._sizes: dict[WorkerKey, int] | None = None

    @property
    def tree_sizes(self) -> dict[WorkerKey, int]:
        if self._sizes is None:
            tree = self._tree
            self._sizes = {key: tree.tree_size(key) if tree else 0 for key in self.scores}
        return self._sizes

    def __repr__(self) -> str:
        return f"OverlapScores(scores={self.scores}, tree_sizes={self.tree_sizes})"


class RadixTree:
    """Radix tree keyed by LocalBlockHash with per-slot {external hash -> node} lookups."""

    def __init__(self) -> None:
        self.root = Node(None, 0, 0, {})
        self.node_count = 0  # excluding the root
        self._slot_of: dict[WorkerKey, int] = {}
        self._keys: list[WorkerKey | None] = []
        self._free_slots: list[int] = []
        self._lookup: list[dict[int, Node] | None] = []

    # -- slots ---------------------------------------------------------------------------
    def slot(self, key: WorkerKey) -> int:
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._free_slots.pop() if self._free_slots else len(self._keys)
            if slot == len(self._keys):
                self._keys.append(key)
                self._lookup.append({})
            else:
                self._keys[slot] = key
                self._lookup[slot] = {}
            self._slot_of[key] = slot
        return slot

    def keys(self) -> list[WorkerKey]:
        return list(self._slot_of)

    def tree_size(self, key: WorkerKey) -> int:
        slot = self._slot_of.get(key)
        return 0 if slot is None else len(self._lookup[slot])  # type: ignore[arg-type]

    def tree_sizes(self) -> dict[WorkerKey, int]:
        return {key: len(self._lookup[slot]) for key, slot in self._slot_of.items()}  # type: ignore[arg-type]

    def has(self, key: WorkerKey, block_hash: int) -> bool:
        slot = self._slot_of.get(key)
        return slot is not None and block_hash in self._lookup[slot]  # type: ignore[operator]

    # -- mutation ------------------------------------------------------------------------
    def store(self, key: WorkerKey, parent_hash: int | None, blocks: Iterable[tuple[int, int]]) -> bool:
        """Insert (external_hash, local_hash) blocks under `parent_hash`; False if parent unknown."""
        slot = self.slot(key)
        lookup = self._lookup[slot]
        if parent_hash is None:
            node = self.root
        else:
            node = lookup.get(parent_hash)  # type: ignore[union-attr]
            if node is None:
                return False
        bit = 1 << slot
        created = 0
        for block_hash, local_hash in blocks:
            children = node.children
            child = children.get(local_hash)
            if child is None:
                child = children[local_hash] = Node(node, local_hash, bit, {})
                created += 1
            else:
                child.mask |= bit
            old = lookup.setdefault(block_hash, child)  # type: ignore[union-attr]
            if old is not child:  # the external hash now names other content
                lookup[block_hash] = child  # type: ignore[index]
                self._drop_bit(old, bit)
            node = child
        self.node_count += created
        return True

    def remove(self, key: WorkerKey, block_hashes: Iterable[int]) -> int:
        """Remove blocks by external hash; returns how many were unknown."""
        slot = self._slot_of.get(key)
        if slot is None:
            return sum(1 for _ in block_hashes)
        lookup = self._lookup[slot]
        bit = 1 << slot
        missing = 0
        for block_hash in block_hashes:
            node = lookup.pop(block_hash, None)  # type: ignore[union-attr]
            if node is None:
                missing += 1
            else:
                self._drop_bit(node, bit)
        return missing

    def clear(self, key: WorkerKey) -> None:
        """Drop everything `key` holds but keep its slot."""
        slot = self._slot_of.get(key)
        if slot is None:
            return
        bit = 1 << slot
        lookup = self._lookup[slot]
        for node in lookup.values():  # type: ignore[union-attr]
            self._drop_bit(node, bit)
        self._lookup[slot] = {}

    def remove_key(self, key: WorkerKey) -> None:
        """Forget `key` entirely and recycle its slot."""
        if key not in self._slot_of:
            return
        self.clear(key)
        slot = self._slot_of.pop(key)
        self._keys[slot] = None
        self._lookup[slot] = None
        self._free_slots.append(slot)

    def _drop_bit(self, node: Node, bit: int) -> None:
        node.mask &= ~bit
        # Prune upward while nodes are empty leaves; a guard on identity keeps a detached
        # node (already pruned) from removing a live sibling with the same hash.
        while node.mask == 0 and not node.children and node.parent is not None:
            parent = node.parent
            if parent.children.get(node.local_hash) is node:
                del parent.children[node.local_hash]
                self.node_count -= 1
            node.parent = None
            node = parent

    # -- queries -------------------------------------------------------------------------
    def find_matches(self, local_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        scores: dict[WorkerKey, int] = {}
        hashes = iter(local_hashes)
        first = self.root.children.get(next(hashes, None))  # type: ignore[arg-type]
        if first is None or not first.mask:
            return OverlapScores(scores, self)
        keys = self._keys
        node, active, depth = first, first.mask, 1
        for local_hash in hashes:
            if early_exit and active & (active - 1) == 0:
                break  # a single worker left: its score is a lower bound
            child = node.children.get(local_hash)
            if child is None:
                break
            mask = child.mask
            if mask != active:
                lost = active & ~mask
                if lost:
                    active &= mask
                    while lost:  # record workers that stop matching at this depth
                        low = lost & -lost
                        scores[keys[low.bit_length() - 1]] = depth  # type: ignore[index]
                        lost ^= low
                    if not active:
                        break
            depth += 1
            node = child
        while active:
            low = active & -active
            scores[keys[low.bit_length() - 1]] = depth  # type: ignore[index]
            active ^= low
        return OverlapScores(scores, self)


class KvIndexer:
    """Applies `RouterEvent`s to a `RadixTree` per storage tier, tracking event ids and apply counts."""

    def __init__(self) -> None:
        self.tree = RadixTree()  # the device tier: what a worker can reuse as is
        self.lower: dict[str, RadixTree] = {}  # LOWER_TIERS that have had events, fastest first
        self._last_event_id: dict[WorkerKey, int] = {}
        self.workers_needing_resync: set[WorkerKey] = set()
        self.counts: Counter[tuple[str, str]] = Counter()  # (event_type, status) -> n

    def apply_event(self, event: RouterEvent) -> str:
        kv = event.event
        kind = _event_type(kv)
        tier = event.storage_tier
        if tier != "device" and tier not in LOWER_TIERS:
            self.counts[(kind, UNSUPPORTED_TIER)] += 1
            return UNSUPPORTED_TIER
        key = (event.worker_id, kv.dp_rank)
        # One sequence per worker whatever the tier: an engine's batch mixes them (vLLM's batch seq).
        gap = self._check_event_id(key, kv.event_id)
        tree = self.tree if tier == "device" else self._lower_tree(tier)
        status = self._apply(tree, key, kv)
        if status == PARENT_NOT_FOUND and tree is self.tree:
            self.workers_needing_resync.add(key)  # the router missed state for this worker
        elif gap:
            status = GAP
        self.counts[(kind, status)] += 1
        return status

    def _check_event_id(self, key: WorkerKey, event_id: int) -> bool:
        last = self._last_event_id.get(key)
        if last is not None and event_id <= last:
            return False  # same batch (ids may repeat) or a re-delivery: not a gap
        self._last_event_id[key] = event_id
        if last is not None and event_id > last + 1:
            self.workers_needing_resync.add(key)
            return True
        return False

    def _lower_tree(self, tier: str) -> RadixTree:
        tree = self.lower.get(tier)
        if tree is None:
            tree = self.lower[tier] = RadixTree()
            self.lower = {t: self.lower[t] for t in LOWER_TIERS if t in self.lower}  # fastest first
        return tree

    @staticmethod
    def _apply(tree: RadixTree, key: WorkerKey, kv: KvCacheEvent) -> str:
        data = kv.data
        if isinstance(data, KvStored):
            return OK if tree.store(key, data.parent_hash, _pairs(data)) else PARENT_NOT_FOUND
        if isinstance(data, KvRemoved):
            return BLOCK_NOT_FOUND if tree.remove(key, data.block_hashes) else OK
        tree.clear(key)
        return OK

    def lower_tier_matches(self, local_hashes: Sequence[int]) -> dict[str, dict[WorkerKey, int]]:
        """Per offloaded tier (fastest first), each worker's matched prefix depth there."""
        return {tier: tree.find_matches(local_hashes).scores for tier, tree in self.lower.items()}

    def remove_worker(self, worker_id: int) -> None:
        for tree in (self.tree, *self.lower.values()):
            for key in [k for k in tree.keys() if k[0] == worker_id]:
                tree.remove_key(key)
        for key in [k for k in self._last_event_id if k[0] == worker_id]:
            del self._last_event_id[key]
        self.workers_needing_resync = {k for k in self.workers_needing_resync if k[0] != worker_id}

    def resync_worker(
        self, worker_id: int, dp_rank: int, stored_events: Iterable[KvCacheEvent | RouterEvent | KvStored]
    ) -> int:
        """Replace (worker, dp_rank)'s state with a full dump of stored events.

        Order-tolerant: events whose parent is not yet known are retried until no progress.
        Returns the number of events that could not be applied.
        """
        key = (worker_id, dp_rank)
        self.tree.clear(key)
        pending: list[KvStored] = []
        last_id = None
        for item in stored_events:
            if isinstance(item, RouterEvent):
                item = item.event
            if isinstance(item, KvCacheEvent):
                last_id = item.event_id if last_id is None else max(last_id, item.event_id)
                item = item.data
            if isinstance(item, KvStored):
                pending.append(item)
        while pending:
            retry = [s for s in pending if not self.tree.store(key, s.parent_hash, _pairs(s))]
            if len(retry) == len(pending):
                break
            pending = retry
        if last_id is not None:
            self._last_event_id[key] = last_id
        self.workers_needing_resync.discard(key)
        self.counts[("resync", OK if not pending else PARENT_NOT_FOUND)] += 1
        return len(pending)

    def find_matches(self, local_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        return self.tree.find_matches(local_hashes, early_exit)

    def tree_sizes(self) -> dict[WorkerKey, int]:
        return self.tree.tree_sizes()

    def last_event_id(self, worker_id: int, dp_rank: int = 0) -> int | None:
        return self._last_event_id.get((worker_id, dp_rank))


_BLOCK_HASH = attrgetter("block_hash")
_TOKENS_HASH = attrgetter("tokens_hash")


def _pairs(stored: KvStored) -> Iterable[tuple[int, int]]:
    """(external, local) hash pairs, iterated in C (no per-block Python frame)."""
    blocks = stored.blocks
    return zip(map(_BLOCK_HASH, blocks), map(_TOKENS_HASH, blocks))


def _event_type(kv: KvCacheEvent) -> str:
    data = kv.data
    if isinstance(data, KvStored):
        return "stored"
    if isinstance(data, KvRemoved):
        return "removed"
    return "cleared" if isinstance(data, KvCleared) else type(data).__name__

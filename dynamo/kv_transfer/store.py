"""Bounded staging store of the sender: KV bytes held for pulls that have not happened yet.

The cap is on bytes held. `put` waits (up to its timeout) for room, which is the
backpressure a producer feels when decode workers do not pull; a transfer nobody claims
within `ttl_s` is dropped. A transfer being sent is pinned: it neither expires nor is
handed to a second puller until the first one has acked or failed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Staged:
    transfer_id: str
    segments: list[memoryview]
    meta: dict[str, Any]
    nbytes: int
    expires_at: float
    owner: Any = None  # keeps the source buffers (e.g. tensors) alive while views point into them
    sending: bool = False


@dataclass
class StoreStats:
    staged: int = 0
    claimed: int = 0
    expired: int = 0
    rejected: int = 0
    bytes_staged: int = 0
    bytes_claimed: int = 0
    waiting: int = 0  # a gauge, not a counter: puts blocked right now for room


class TooLarge(ValueError):
    pass


@dataclass
class StagingStore:
    cap_bytes: int
    ttl_s: float
    clock: Any = time.monotonic
    stats: StoreStats = field(default_factory=StoreStats)

    def __post_init__(self) -> None:
        self._entries: dict[str, Staged] = {}
        self._held = 0
        self._cond = threading.Condition()

    @property
    def held_bytes(self) -> int:
        return self._held

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, transfer_id: str, segments: list[memoryview], meta: dict[str, Any], owner: Any = None,
            timeout: float = 0.0) -> bool:
        """Stage a transfer; False when no room appeared within `timeout` seconds."""
        nbytes = sum(len(s) for s in segments)
        if nbytes > self.cap_bytes:
            self.stats.rejected += 1
            raise TooLarge(f"transfer of {nbytes} bytes exceeds the staging cap of {self.cap_bytes}")
        deadline = self.clock() + timeout
        with self._cond:
            if not self._wait_for_room_locked(nbytes, deadline):
                self.stats.rejected += 1
                return False
            if transfer_id in self._entries:
                self._drop_locked(transfer_id)
            self._entries[transfer_id] = Staged(transfer_id, segments, meta, nbytes, self.clock() + self.ttl_s, owner)
            self._held += nbytes
            self.stats.staged += 1
            self.stats.bytes_staged += nbytes
            self._cond.notify_all()
            return True

    def _wait_for_room_locked(self, nbytes: int, deadline: float) -> bool:
        """Wait until `nbytes` fit or `deadline` passes, counted in `stats.waiting` while blocked."""
        blocked = False
        try:
            while True:
                self._expire_locked()
                if self._held + nbytes <= self.cap_bytes:
                    return True
                left = deadline - self.clock()
                if left <= 0:
                    return False
                if not blocked:
                    blocked = True
                    self.stats.waiting += 1
                self._cond.wait(min(left, 0.05))  # wake up for expiries too
        finally:
            if blocked:
                self.stats.waiting -= 1

    def checkout(self, transfer_id: str, wait_s: float = 0.0) -> Staged | None:
        """Pin a staged transfer for sending; waits up to `wait_s` for it to be staged."""
        deadline = self.clock() + wait_s
        with self._cond:
            while True:
                self._expire_locked()
                entry = self._entries.get(transfer_id)
                if entry is not None and not entry.sending:
                    entry.sending = True
                    return entry
                left = deadline - self.clock()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.05))

    def finish(self, transfer_id: str, claimed: bool) -> None:
        """After a send: claimed frees it; otherwise it stays for a retry (with a fresh TTL)."""
        with self._cond:
            entry = self._entries.get(transfer_id)
            if entry is None:
                return
            if claimed:
                self.stats.claimed += 1
                self.stats.bytes_claimed += entry.nbytes
                self._drop_locked(transfer_id)
            else:
                entry.sending = False
                entry.expires_at = self.clock() + self.ttl_s
            self._cond.notify_all()

    def expire(self) -> int:
        with self._cond:
            return self._expire_locked()

    def clear(self) -> None:
        with self._cond:
            for tid in list(self._entries):
                self._drop_locked(tid)
            self._cond.notify_all()

    def _expire_locked(self) -> int:
        now = self.clock()
        dead = [t for t, e in self._entries.items() if not e.sending and e.expires_at <= now]
        for tid in dead:
            self._drop_locked(tid)
        self.stats.expired += len(dead)
        if dead:
            self._cond.notify_all()
        return len(dead)

    def _drop_locked(self, transfer_id: str) -> None:
        entry = self._entries.pop(transfer_id)
        self._held -= entry.nbytes

"""Active-sequence (load) tracking per (worker, dp_rank), as in NVIDIA Dynamo.

For each in-flight request the router remembers the SequenceHashes of its prompt blocks
and its pending prefill tokens. A worker's decode load is the number of *unique* active
blocks (refcounted, so a prefix shared by several requests counts once when
`assume_kv_reuse`); its prefill load is the sum of `isl - overlap*block_size` over
requests that have not produced their first token.

Lifecycle: `add_request` (when the request is sent) -> `mark_prefill_completed` (first
token) -> `free` (finished or cancelled; idempotent).

A worker that leaves (out of discovery: a failed health canary, a drain) keeps serving the
requests it has, so their bookings are set aside with it, not dropped: they end as those requests
are freed, and come back as its load if it rejoins first (else a rejoined worker would look idle
while still busy with them).

A worker's load lives in a `LoadLedger`, which several ActiveSequences may share: one engine serving
a base model and its LoRA adapters is in each of their pools, and each pool's router must see the
load the others booked there. What stays per ActiveSequences is its own requests and the prefix
sharing among them (`sharers`, `holders`: one model's blocks are no use to another's requests).
"""

from __future__ import annotations

import time
from typing import Callable, Container, Iterable, Mapping, Sequence

WorkerKey = tuple[int, int]


class _Request:
    __slots__ = ("key", "load", "seq_hashes", "prefill_tokens", "private_blocks", "decoding", "booked_at", "answer_tokens")

    def __init__(self, key: WorkerKey, load: _WorkerLoad, seq_hashes: Sequence[int], prefill_tokens: int,
                 private_blocks: int, booked_at: float, answer_tokens: int | None) -> None:
        self.key = key
        self.load = load  # the worker's load it is booked in, even once the worker has left
        self.seq_hashes = seq_hashes
        self.prefill_tokens = prefill_tokens
        self.private_blocks = private_blocks
        self.decoding = False  # past its first token: counted among its blocks' sharers
        self.booked_at = booked_at
        self.answer_tokens = answer_tokens  # its answer's expected length, when known


class _WorkerLoad:
    __slots__ = ("block_refs", "private_blocks", "prefill_tokens", "members")

    def __init__(self) -> None:
        self.members: dict[str, _Request] = {}  # the worker's active requests by id
        self.block_refs: dict[int, int] = {}  # seq_hash -> number of active requests using it
        self.private_blocks = 0  # blocks of requests booked without reuse (assume_kv_reuse=False)
        self.prefill_tokens = 0

    @property
    def requests(self) -> int:
        return len(self.members)

    @property
    def active_blocks(self) -> int:
        return len(self.block_refs) + self.private_blocks

    def new_blocks(self, seq_hashes: Sequence[int]) -> int:
        """Blocks of `seq_hashes` not active here."""
        return len(seq_hashes) - _held_prefix(seq_hashes, self.block_refs)


class LoadLedger:
    """Per (worker, dp_rank), the load booked there, shared by the ActiveSequences of every pool that
    holds the worker (reference-counted). A load outlives its last holder while requests booked in it
    run, and is the one a rejoining worker gets back."""

    def __init__(self) -> None:
        self.loads: dict[WorkerKey, _WorkerLoad] = {}
        self._holders: dict[WorkerKey, int] = {}

    def hold(self, key: WorkerKey) -> _WorkerLoad:
        """A pool takes the worker in: its load, as other pools have booked it."""
        self._holders[key] = self._holders.get(key, 0) + 1
        return self.loads.setdefault(key, _WorkerLoad())

    def release(self, key: WorkerKey) -> None:
        """A pool let the worker go; the last to do so forgets it once its requests end."""
        left = self._holders.get(key, 0) - 1
        if left > 0:
            self._holders[key] = left
        else:
            self._holders.pop(key, None)
            self.settle(key)

    def get(self, key: WorkerKey) -> _WorkerLoad | None:
        return self.loads.get(key)

    def settle(self, key: WorkerKey) -> None:
        """Forget the worker's load if no pool holds it and no request is booked in it."""
        load = self.loads.get(key)
        if load is not None and not load.members and key not in self._holders:
            del self.loads[key]


class ActiveSequences:
    def __init__(
        self,
        block_size: int,
        *,
        assume_kv_reuse: bool = True,
        track_active_blocks: bool = True,
        track_prefill_tokens: bool = True,
        clock: Callable[[], float] = time.monotonic,
        ledger: LoadLedger | None = None,
    ) -> None:
        self.block_size = block_size
        self.ledger = LoadLedger() if ledger is None else ledger
        self._clock = clock
        self.assume_kv_reuse = assume_kv_reuse
        self.track_active_blocks = track_active_blocks
        self.track_prefill_tokens = track_prefill_tokens
        self._workers: dict[WorkerKey, _WorkerLoad] = {}  # this pool's workers: their loads, from the ledger
        self._requests: dict[str, _Request] = {}
        self._sharers: dict[int, int] = {}  # seq_hash -> decoding requests holding it, on any worker
        self._holders: dict[int, int] = {}  # seq_hash -> active requests holding it (prefilling too), on any worker

    # -- workers -------------------------------------------------------------------------
    def add_worker(self, key: WorkerKey) -> None:
        if key not in self._workers:
            self._workers[key] = self.ledger.hold(key)

    def remove_worker(self, worker_id: int) -> list[str]:
        """Take a worker out of the candidates; returns the ids of its requests (booked here) still
        running, whose bookings stay (set aside) until they are freed or the worker rejoins."""
        running: list[str] = []
        for key in [k for k in self._workers if k[0] == worker_id]:
            load = self._workers.pop(key)
            running.extend(rid for rid in load.members if rid in self._requests)
            self.ledger.release(key)
        return running

    def workers(self) -> list[WorkerKey]:
        return list(self._workers)

    # -- lifecycle -----------------------------------------------------------------------
    def prefill_tokens_for(self, isl: int, overlap_blocks: int) -> int:
        if not self.track_prefill_tokens:
            return 0
        return max(isl - overlap_blocks * self.block_size, 0)

    def add_request(
        self, key: WorkerKey, request_id: str, seq_hashes: Sequence[int], isl: int, overlap_blocks: int,
        output_blocks: int = 0, prefill_tokens: int | None = None, answer_tokens: int | None = None,
    ) -> None:
        """`output_blocks`: blocks the request's answer will fill (output-block tracking), held
        privately until it ends; `prefill_tokens`: its own new prefill when the caller knows
        better than `isl - overlap` (a prefix being prefilled there by an earlier request);
        `answer_tokens`: its answer's expected length, when known (it predicts when it ends)."""
        if request_id in self._requests:
            raise ValueError(f"request {request_id!r} is already active")
        load = self._workers.get(key) or self.ledger.get(key)  # a worker that left: booked where its load is
        if load is None:  # a worker the pool has not added (the pool is the caller's to keep)
            self.add_worker(key)
            load = self._workers[key]
        tokens = self.prefill_tokens_for(isl, overlap_blocks) if prefill_tokens is None else prefill_tokens
        private = 0
        if not self.track_active_blocks:
            seq_hashes = ()
        elif not self.assume_kv_reuse:
            private, seq_hashes = len(seq_hashes), ()
        if self.track_active_blocks:
            private += output_blocks
        refs, holders = load.block_refs, self._holders
        for seq_hash in seq_hashes:
            refs[seq_hash] = refs.get(seq_hash, 0) + 1
            holders[seq_hash] = holders.get(seq_hash, 0) + 1
        load.private_blocks += private
        load.prefill_tokens += tokens
        self._requests[request_id] = load.members[request_id] = _Request(key, load, seq_hashes, tokens, private,
                                                                         self._clock(), answer_tokens)

    def mark_prefill_completed(self, request_id: str) -> bool:
        req = self._requests.get(request_id)
        if req is None:
            return False
        if not req.decoding:
            req.decoding = True
            sharers = self._sharers
            for seq_hash in req.seq_hashes:
                sharers[seq_hash] = sharers.get(seq_hash, 0) + 1
        if req.prefill_tokens == 0:
            return False
        req.load.prefill_tokens -= req.prefill_tokens
        req.prefill_tokens = 0
        return True

    def free(self, request_id: str) -> bool:
        """Release everything the request booked; False if unknown (already freed)."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._unshare(req)
        load = req.load
        _release(load.block_refs, req.seq_hashes)
        load.members.pop(request_id, None)
        load.private_blocks -= req.private_blocks
        load.prefill_tokens -= req.prefill_tokens
        if not load.members:
            self.ledger.settle(req.key)  # the last request of a worker that left: forgotten
        return True

    def _unshare(self, req: _Request) -> None:
        _release(self._holders, req.seq_hashes)
        if req.decoding:
            _release(self._sharers, req.seq_hashes)

    def sharers(self, seq_hash: int) -> int:
        """Requests past their prefill, on any worker, whose prompts hold this block (0 without reuse
        tracking): the decode load a prefix brings wherever it is cached."""
        return self._sharers.get(seq_hash, 0)

    def holders(self, seq_hash: int) -> int:
        """Active requests, on any worker, whose prompts hold this block, those still prefilling too."""
        return self._holders.get(seq_hash, 0)

    def booking(self, request_id: str) -> tuple[float, int | None] | None:
        """(when it was booked, its expected answer length) of an active request."""
        req = self._requests.get(request_id)
        return None if req is None else (req.booked_at, req.answer_tokens)

    def worker_of(self, request_id: str) -> WorkerKey | None:
        req = self._requests.get(request_id)
        return None if req is None else req.key

    # -- projections and metrics ---------------------------------------------------------
    def potential_blocks_and_tokens(
        self,
        seq_hashes: Sequence[int],
        isl: int,
        overlaps: Mapping[WorkerKey, int],
        keys: Iterable[WorkerKey] | None = None,
        inflight_credit: bool = False,
    ) -> dict[WorkerKey, tuple[int, int]]:
        """Load each worker would have if this request were booked on it (nothing booked).
        `inflight_credit`: prompt blocks already active on a worker (an earlier request with the
        same prefix is there, maybe still prefilling, so its blocks are not indexed yet) count
        as cached for the prefill estimate."""
        out: dict[WorkerKey, tuple[int, int]] = {}
        n = len(seq_hashes)
        first, last = (seq_hashes[0], seq_hashes[-1]) if n else (None, None)
        no_overlap_tokens = self.prefill_tokens_for(isl, 0)
        mode = 0 if not self.track_active_blocks else 1 if not self.assume_kv_reuse else 2
        workers = self._workers
        for key in (workers if keys is None else keys):
            overlap = overlaps.get(key)
            tokens = self.prefill_tokens_for(isl, overlap) if overlap else no_overlap_tokens
            load = workers.get(key)
            if load is None:
                out[key] = (n if mode else 0, tokens)
                continue
            refs = load.block_refs
            if mode == 0:
                new = 0
            elif mode == 1 or not n or first not in refs:
                new = n  # hot path: nothing of this prompt is active here
            elif last in refs:
                new = 0
            else:
                new = load.new_blocks(seq_hashes)
            if inflight_credit and new < n and n - new > (overlap or 0):
                tokens = self.prefill_tokens_for(isl, n - new)
            out[key] = (len(refs) + load.private_blocks + new, load.prefill_tokens + tokens)
        return out

    def active_blocks(self, key: WorkerKey) -> int:
        load = self._workers.get(key)
        return 0 if load is None else load.active_blocks

    def active_prefill_tokens(self, key: WorkerKey) -> int:
        load = self._workers.get(key)
        return 0 if load is None else load.prefill_tokens

    def requests(self, key: WorkerKey) -> int:
        load = self._workers.get(key)
        return 0 if load is None else load.requests

    def releases(self, key: WorkerKey, finish: Callable[[float, int | None], float]) -> list[tuple[float, int]]:
        """(when, blocks freed) per request running on the worker, in the order they end, as
        `finish(booked_at, answer_tokens)` predicts: a block shared by several of them is freed by
        the last to end.

        Walked from the last to end: what a request frees is what no later one holds, a suffix of its
        blocks (`_held_prefix`); each block is added once."""
        load = self._workers.get(key)
        if load is None:
            return []
        ends = sorted(((finish(r.booked_at, r.answer_tokens), r) for r in load.members.values()), key=lambda e: e[0])
        held: set[int] = set()  # blocks of requests that end later
        out = []
        for when, req in reversed(ends):
            seq = req.seq_hashes
            kept = _held_prefix(seq, held)
            held.update(seq[kept:])
            out.append((when, req.private_blocks + len(seq) - kept))
        out.reverse()
        return out

    def loads(self) -> dict[WorkerKey, dict[str, int]]:
        return {
            key: {"active_blocks": w.active_blocks, "active_prefill_tokens": w.prefill_tokens, "requests": w.requests}
            for key, w in self._workers.items()
        }

    def __len__(self) -> int:
        return len(self._requests)


def _held_prefix(seq_hashes: Sequence[int], held: Container[int]) -> int:
    """How many leading blocks of a chained sequence `held` contains. Every booked request holds a
    full prefix chain of sequence hashes (a block's hash covers every block before it), so the held
    ones among `seq_hashes` form a prefix: binary search for its length."""
    hi = len(seq_hashes)
    if not held or hi == 0 or seq_hashes[0] not in held:
        return 0
    if seq_hashes[hi - 1] in held:
        return hi
    lo, hi = 1, hi - 1
    while lo < hi:  # the first block not held lies in [lo, hi]; seq_hashes[hi] is not held
        mid = (lo + hi) // 2
        if seq_hashes[mid] in held:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _release(refs: dict[int, int], seq_hashes: Sequence[int]) -> None:
    """Drop one reference to each block; a block nobody holds leaves the map."""
    for seq_hash in seq_hashes:
        count = refs[seq_hash] - 1
        if count:
            refs[seq_hash] = count
        else:
            del refs[seq_hash]

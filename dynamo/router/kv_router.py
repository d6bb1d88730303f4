"""KvRouter: the KV-cache-aware routing library shared by the frontend, the standalone
`dynamo.router` service and anything else that picks workers.

Pure and network-free: the caller feeds worker membership (`add_worker`/`remove_worker`),
KV events (`apply_event`) and optional load reports (`update_metrics`), and drives each
request through `select` -> `add_request` -> `mark_prefill_complete` -> `free`.
`select` books nothing (Dynamo's `best_worker`); load is booked by `add_request` when the
request is sent. The router owns membership, reported load, the indexes and busy detection; a
prompt's hashes and index lookup are `prefix_match`'s, each candidate's price and what the ttft
cost model learns are `candidate_costs`'.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any, Callable, Collection, Mapping, Sequence

from dynamo.llm.kv_events.hashing import MediaSalt
from dynamo.llm.kv_events.protocol import LoadMetrics, RouterEvent
from dynamo.router.active_sequences import ActiveSequences, LoadLedger
from dynamo.router.approx import ApproxIndexer
from dynamo.router.candidate_costs import CandidateCosts
from dynamo.router.config import KvMode, KvRouterConfig, RouterConfigOverride
from dynamo.router.indexer import KvIndexer, WorkerKey
from dynamo.router.prefix_match import PrefixMatch, PromptHashes
from dynamo.router.selection import RoutingOverhead, Selection
from dynamo.router.selector import AllWorkersBusy, BusyThresholds, NoWorkers, Selector, WorkerCapacity, is_busy
from dynamo.router.tier_credit import tiered_overlaps

log = logging.getLogger(__name__)

__all__ = ["KvRouter", "Selection", "PrefixMatch", "NoWorkers", "AllWorkersBusy"]


class KvRouter:
    def __init__(
        self,
        block_size: int,
        config: KvRouterConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        ledger: LoadLedger | None = None,
    ) -> None:
        """`ledger`: the workers' loads, shared with the routers of other pools on the same engines (a
        base model's and its LoRA adapters'); a router of its own by default."""
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.block_size = block_size
        self.config = config or KvRouterConfig()
        self.config.validate()
        cfg = self.config
        self.indexer = KvIndexer()
        self._tier_weights = {"host_pinned": cfg.router_host_cache_hit_weight,
                              "disk": cfg.router_disk_cache_hit_weight}
        lru = self._total_kv_blocks if cfg.router_approximate_cache_policy == "lru" else None
        self.approx = ApproxIndexer(cfg.router_ttl_secs, cfg.router_max_tree_size, cfg.router_prune_target_ratio,
                                    clock or time.monotonic, capacity=lru)
        self.active = ActiveSequences(
            block_size,
            assume_kv_reuse=cfg.router_assume_kv_reuse,
            track_active_blocks=cfg.router_track_active_blocks,
            track_prefill_tokens=cfg.router_track_prefill_tokens,
            clock=clock or time.monotonic,
            ledger=ledger,
        )
        self.selector = Selector(rng)
        self.queue_class: tuple[int | None, float | None] = (None, cfg.router_queue_threshold)  # set_queue_class
        self.set_busy_thresholds(BusyThresholds.of(cfg))
        self._workers: dict[int, list[WorkerKey]] = {}
        self._capacity: dict[int, WorkerCapacity] = {}
        self._reported: dict[WorkerKey, LoadMetrics] = {}
        self.costs = CandidateCosts(block_size, cfg, self.active, clock or time.monotonic, self._total_kv_blocks,
                                    self._offloads)
        self.hashes = PromptHashes(block_size)  # hashed once per select/add pair
        self._stats = {"requests": 0, "prompt_blocks": 0, "overlap_blocks": 0, "last_decision_us": 0.0,
                       "busy_rejections": 0, "ignored_events": 0}
        if self.mode == KvMode.APPROXIMATE:
            log.warning("KV router in approximate mode: caches are predicted from routing decisions "
                        "(TTL %.0fs), not from worker KV events", cfg.router_ttl_secs)
        else:
            log.info("KV router mode: %s (block_size=%d)", self.mode, block_size)

    @property
    def mode(self) -> KvMode:
        return self.config.mode

    def set_busy_thresholds(self, thresholds: BusyThresholds) -> None:
        """The operator's busy thresholds from now on (the flags at start, `POST /busy_threshold` later)."""
        self.busy_thresholds = thresholds
        # Dynamo's --router-queue-threshold (or its policy class's thresholds) is a prefill busy level whose
        # overflow waits in the router queue: with ours always queueing busy requests, the stricter applies.
        self.thresholds = thresholds.with_prefill(*self.queue_class)

    def set_queue_class(self, prefill_tokens: int | None, prefill_frac: float | None) -> None:
        """The prefill thresholds of the pool's default router-queue class (its policy profile's)."""
        self.queue_class = (prefill_tokens, prefill_frac)
        self.set_busy_thresholds(self.busy_thresholds)

    # -- membership and inputs -----------------------------------------------------------
    def add_worker(
        self, worker_id: int, dp_size: int = 1, total_kv_blocks: int | None = None,
        max_num_batched_tokens: int | None = None,
    ) -> None:
        keys = [(worker_id, rank) for rank in range(max(dp_size, 1))]
        self._workers[worker_id] = keys
        self._capacity[worker_id] = WorkerCapacity(total_kv_blocks, max_num_batched_tokens)
        for key in keys:
            self.active.add_worker(key)

    def output(self, request_id: str) -> None:
        """The request's worker sent it output now: the end of one of that worker's steps."""
        key = self.active.worker_of(request_id)
        if key is not None and key[0] in self._workers:  # not a worker that left: its clock is forgotten
            self.costs.steps.output(key)

    def remove_worker(self, worker_id: int) -> list[str]:
        """Forget a worker's cache and step clock; returns the ids of its requests still running, whose
        bookings stay until they are freed (or count again if it rejoins first)."""
        self._workers.pop(worker_id, None)
        self._capacity.pop(worker_id, None)
        self._reported = {k: v for k, v in self._reported.items() if k[0] != worker_id}
        self.indexer.remove_worker(worker_id)
        self.approx.remove_worker(worker_id)
        self.costs.steps.forget_worker(worker_id)
        return self.active.remove_worker(worker_id)

    def workers(self) -> dict[int, int]:
        """worker_id -> dp_size."""
        return {w: len(keys) for w, keys in self._workers.items()}

    def apply_event(self, event: RouterEvent) -> str:
        if self.mode != KvMode.KV_EVENTS:
            self._stats["ignored_events"] += 1
            return "ignored"
        return self.indexer.apply_event(event)

    def update_metrics(self, metrics: LoadMetrics) -> None:
        """Worker-reported load: its KV capacity and usage feed busy detection (with our own bookings)."""
        self._reported[(metrics.worker_id, metrics.dp_rank)] = metrics

    # -- routing -------------------------------------------------------------------------
    def _candidates(self, allowed: Collection[int] | None) -> list[WorkerKey]:
        if allowed is None:
            return [key for keys in self._workers.values() for key in keys]
        return [key for w in allowed for key in self._workers.get(w, ())]

    def match_prefix(self, token_ids: Sequence[int], request_id: str | None = None, lora_name: str | None = None,
                     cache_salt: str | None = None, media: MediaSalt | None = None) -> PrefixMatch:
        """The prompt hashed in its KV namespace (remembered for the request id until it is booked) and
        looked up once in the index in effect."""
        started = time.perf_counter()
        hashed = self.hashes.hash(token_ids, request_id, lora_name, cache_salt, media)
        lookup = time.perf_counter()
        overlaps = {} if self.mode == KvMode.LOAD_ONLY else self._index().find_matches(hashed.local).scores
        return PrefixMatch(hashed, overlaps, time.perf_counter() - lookup, started)

    def overlap_scores(self, token_ids: Sequence[int], lora_name: str | None = None,
                       request_id: str | None = None, cache_salt: str | None = None,
                       media: MediaSalt | None = None) -> dict[WorkerKey, int]:
        return dict(self.match_prefix(token_ids, request_id, lora_name, cache_salt, media).overlaps)

    def new_prefill_tokens(self, match: PrefixMatch, allowed: Collection[int] | None = None) -> int:
        """Prompt tokens left to prefill on the allowed worker that caches most of the matched prompt."""
        return match.uncached_tokens(set(self._candidates(allowed)), self.block_size)

    def _index(self) -> KvIndexer | ApproxIndexer:
        return self.indexer if self.mode == KvMode.KV_EVENTS else self.approx

    def select(
        self,
        token_ids: Sequence[int],
        *,
        request_id: str | None = None,
        lora_name: str | None = None,
        allowed: Collection[int] | None = None,
        override: RouterConfigOverride | Mapping[str, Any] | None = None,
        cache_salt: str | None = None,
        media: MediaSalt | None = None,
        thresholds: BusyThresholds | None = None,
        match: PrefixMatch | None = None,
    ) -> Selection:
        """Best (worker, dp_rank) for this prompt; books nothing. `thresholds`: busy thresholds of the
        request's router-queue class, in place of the pool's. `match`: this decision's lookup of the
        prompt (`match_prefix`), made by a caller that needed it first; looked up here when None."""
        start = time.perf_counter()
        weight, temperature = self._effective(override)
        candidates = self._candidates(allowed)
        if not candidates:
            raise NoWorkers("no workers available" if allowed is None else "no allowed workers available")
        if match is None:
            match = self.match_prefix(token_ids, request_id, lora_name, cache_salt, media)
            start = time.perf_counter()
        isl, local, seq, hashing = match.hashed
        overlaps = match.overlaps
        credit = self.config.router_inflight_prefix_credit
        potentials = self.active.potential_blocks_and_tokens(seq, isl, self._with_lower_tiers(overlaps, local),
                                                             candidates, credit)
        limits = self.thresholds if thresholds is None else thresholds
        if limits.enabled:
            candidates = [k for k in candidates if not self._busy(k, limits)]
            if not candidates:
                self._stats["busy_rejections"] += 1
                raise AllWorkersBusy("All workers are busy, please retry later")
            potentials = {k: potentials[k] for k in candidates}
        costs = self.costs
        x_of = costs.features(potentials) if costs.uses_ttft(override, weight, temperature) else None
        logits = costs.costs(potentials, x_of, seq, isl, weight)
        worker_id, dp_rank = self.selector.select(logits, temperature, self._index().tree.tree_size)
        end = time.perf_counter()
        self._stats["last_decision_us"] = (end - match.started) * 1e6
        overhead = RoutingOverhead(*hashing, match.lookup_seconds, end - start, end - match.started)
        chosen = (worker_id, dp_rank)
        x = x_of(chosen) if x_of is not None else None
        own = potentials[chosen][1] - self.active.active_prefill_tokens(chosen) if credit else None
        best = max((overlaps.get(k, 0) for k in candidates), default=0)
        return Selection(worker_id, dp_rank, overlaps.get(chosen, 0), math.ceil(isl / self.block_size), logits, x,
                         own, overhead, best)

    def _offloads(self, key: WorkerKey) -> bool:
        """The worker keeps blocks in a lower tier (it has published some there)."""
        return self.mode == KvMode.KV_EVENTS and any(t.tree_size(key) for t in self.indexer.lower.values())

    def _with_lower_tiers(self, overlaps: dict[WorkerKey, int], local: Sequence[int]) -> dict[WorkerKey, int]:
        """`overlaps` (device hits) plus the credit for prompt blocks held only in offloaded tiers."""
        if self.mode != KvMode.KV_EVENTS or not self.indexer.lower:
            return overlaps
        return tiered_overlaps(overlaps, self.indexer.lower_tier_matches(local), self._tier_weights)

    def _total_kv_blocks(self, key: WorkerKey) -> int | None:
        reported = self._reported.get(key)
        if reported is not None and reported.kv_total_blocks:
            return reported.kv_total_blocks
        capacity = self._capacity.get(key[0])
        return capacity.total_kv_blocks if capacity and capacity.total_kv_blocks else None

    def _effective(self, override: RouterConfigOverride | Mapping[str, Any] | None) -> tuple[float, float]:
        weight, temperature = self.config.overlap_score_weight, self.config.router_temperature
        if override is None:
            return weight, temperature
        get = override.get if isinstance(override, Mapping) else (lambda n: getattr(override, n, None))
        w, t = get("overlap_score_weight"), get("router_temperature")
        return (weight if w is None else float(w)), (temperature if t is None else float(t))

    def _tree_sizes(self) -> dict[WorkerKey, int]:
        return self._index().tree_sizes()

    def worker_busy(self, worker_id: int) -> bool:
        """Every rank of the worker is over a busy threshold: `select` would leave it out now."""
        keys = self._workers.get(worker_id, ())
        return bool(keys) and self.thresholds.enabled and all(self._busy(k) for k in keys)

    def _busy(self, key: WorkerKey, thresholds: BusyThresholds | None = None) -> bool:
        capacity = self._capacity.get(key[0])
        blocks = self.active.active_blocks(key)
        reported = self._reported.get(key)
        if reported is not None and reported.kv_total_blocks:
            # Reports lag by up to a publish interval; our own bookings are immediate.
            blocks = max(blocks, reported.kv_active_blocks)
        size = WorkerCapacity(self._total_kv_blocks(key), capacity.max_num_batched_tokens if capacity else None)
        return is_busy(blocks, self.active.active_prefill_tokens(key), size, thresholds or self.thresholds)

    # -- lifecycle -----------------------------------------------------------------------
    def add_request(
        self, request_id: str, selection: Selection, token_ids: Sequence[int], lora_name: str | None = None,
        max_tokens: int | None = None, cache_salt: str | None = None, media: MediaSalt | None = None,
    ) -> list[int]:
        """Book the request's load on the selected worker (call when the request is sent).
        Returns the prompt's sequence hashes (what router replicas share)."""
        isl, local, seq, _ = self.hashes.hash(token_ids, request_id, lora_name, cache_salt, media)
        self.hashes.forget(request_id)
        key = (selection.worker_id, selection.dp_rank)
        self.active.add_request(key, request_id, seq, isl, selection.overlap_blocks,
                                self.output_blocks_for(isl, max_tokens), selection.prefill_tokens, max_tokens)
        self.costs.booked(request_id, selection.features)
        if self.mode == KvMode.APPROXIMATE:
            self.approx.record(key, local, seq)
        stats = self._stats
        stats["requests"] += 1
        stats["prompt_blocks"] += len(local)
        stats["overlap_blocks"] += selection.overlap_blocks
        return seq

    def output_blocks_for(self, isl: int, max_tokens: int | None) -> int:
        """Blocks the answer will newly fill: the partial last prompt block absorbs the first tokens."""
        cfg = self.config
        if not cfg.router_track_output_blocks or not max_tokens:
            return 0  # unknown answer length: nothing to assume
        expected = min(max_tokens, cfg.router_output_blocks_horizon)
        bs = self.block_size
        return (isl + expected) // bs - isl // bs

    def mark_prefill_complete(self, request_id: str) -> bool:
        self.costs.first_token(request_id)
        return self.active.mark_prefill_completed(request_id)

    def free(self, request_id: str) -> bool:
        self.hashes.forget(request_id)
        self.costs.finished(request_id)
        return self.active.free(request_id)

    # -- observability -------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s = self._stats
        events: dict[str, dict[str, int]] = {}
        for (kind, status), n in self.indexer.counts.items():
            events.setdefault(kind, {})[status] = n
        return {
            "mode": self.mode,
            "events_applied": events,
            "ignored_events": s["ignored_events"],
            "workers_needing_resync": sorted(self.indexer.workers_needing_resync),
            "requests": s["requests"],
            "prompt_blocks": s["prompt_blocks"],
            "overlap_blocks": s["overlap_blocks"],
            "kv_hit_rate": s["overlap_blocks"] / s["prompt_blocks"] if s["prompt_blocks"] else 0.0,
            "last_decision_us": s["last_decision_us"],
            "busy_rejections": s["busy_rejections"],
            "cost_model": self.config.router_cost_model,
            "ttft_coefficients": [round(c, 6) for c in self.costs.ttft.coef],
            "ttft_observations": self.costs.ttft.observations,
            "workers": {f"{w}:{r}": v for (w, r), v in self.active.loads().items()},
            "tree_sizes": {f"{w}:{r}": v for (w, r), v in self._tree_sizes().items()},
            "approx": {"expired_blocks": self.approx.expired_blocks, "pruned_blocks": self.approx.pruned_blocks,
                       "evicted_blocks": self.approx.evicted_blocks},
        }

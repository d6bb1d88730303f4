"""KvRouter: the KV-cache-aware routing library shared by the frontend, the standalone
`dynamo.router` service and anything else that picks workers.

Pure and network-free: the caller feeds worker membership (`add_worker`/`remove_worker`),
KV events (`apply_event`) and optional load reports (`update_metrics`), and drives each
request through `select` -> `add_request` -> `mark_prefill_complete` -> `free`.
`select` books nothing (Dynamo's `best_worker`); load is booked by `add_request` when the
request is sent.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import OrderedDict
from typing import Any, Callable, Collection, Mapping, Sequence

from dynamo.router.active_sequences import ActiveSequences
from dynamo.router.approx import ApproxIndexer
from dynamo.router.config import KvMode, KvRouterConfig, RouterConfigOverride
from dynamo.router.cost_model import TtftModel, features
from dynamo.router.dynamo_cost import DynamoCostKnobs, dynamo_costs
from dynamo.llm.kv_events.hashing import MediaSalt, block_hashes, sequence_hashes
from dynamo.router.indexer import KvIndexer, WorkerKey
from dynamo.router.prefix_amortization import amortized
from dynamo.router.selection import RoutingOverhead, Selection
from dynamo.router.kv_capacity import AnswerPace, blocks_short, finish_time, memory_wait, priced_waits
from dynamo.router.tier_credit import tiered_overlaps
from dynamo.llm.kv_events.protocol import LoadMetrics, RouterEvent
from dynamo.router.step_clock import StepClock
from dynamo.router.selector import (
    AllWorkersBusy,
    BusyThresholds,
    NoWorkers,
    Selector,
    WorkerCapacity,
    compute_logits,
    is_busy,
)

log = logging.getLogger(__name__)
# KV blocks assumed for a worker when no candidate's size is known (the engines' default, as Dynamo's mocker).
NOMINAL_KV_BLOCKS = 16384

__all__ = ["KvRouter", "Selection", "NoWorkers", "AllWorkersBusy"]

_HASH_CACHE_SIZE = 4096


class KvRouter:
    def __init__(
        self,
        block_size: int,
        config: KvRouterConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
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
        )
        self.selector = Selector(rng)
        knobs = DynamoCostKnobs.of(cfg)
        self.knobs = None if knobs.default else knobs  # decided once, not per request: the config is fixed
        self.queue_class: tuple[int | None, float | None] = (None, cfg.router_queue_threshold)  # set_queue_class
        self.set_busy_thresholds(BusyThresholds.of(cfg))
        self._workers: dict[int, list[WorkerKey]] = {}
        self._capacity: dict[int, WorkerCapacity] = {}
        self._reported: dict[WorkerKey, LoadMetrics] = {}
        self.ttft = TtftModel()
        self.pace = AnswerPace()
        self._clock = clock or time.monotonic
        self.steps = StepClock(self._clock)  # each worker's place in its engine step (step_clock.py)
        self._booked: dict[str, tuple[float, tuple[float, ...]]] = {}  # request -> (booked at, features)
        # request_id -> (isl, local hashes, sequence hashes, lora): hashed once per select/add pair
        self._hashes: OrderedDict[str, tuple[int, list[int], list[int], str | None]] = OrderedDict()
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
        if key is not None:
            self.steps.output(key)

    def remove_worker(self, worker_id: int) -> list[str]:
        """Forget a worker; returns the ids of its in-flight requests (now untracked)."""
        self._workers.pop(worker_id, None)
        self._capacity.pop(worker_id, None)
        self._reported = {k: v for k, v in self._reported.items() if k[0] != worker_id}
        self.indexer.remove_worker(worker_id)
        self.approx.remove_worker(worker_id)
        self.steps.forget_worker(worker_id)
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
    def _hash(self, token_ids: Sequence[int], request_id: str | None, lora_name: str | None,
              cache_salt: str | None = None, media: MediaSalt | None = None):
        """(prompt length, local hashes, sequence hashes, (block, sequence) hashing seconds) in the prompt's
        KV namespace (its LoRA adapter and cache salt), remembered per request id between selection and
        booking; a remembered prompt took no hashing now."""
        namespace = (lora_name, cache_salt, media)
        if request_id is not None:
            cached = self._hashes.get(request_id)
            if cached is not None and cached[0] == len(token_ids) and cached[3] == namespace:
                return (*cached[:3], (0.0, 0.0))
        started = time.perf_counter()
        local = block_hashes(token_ids, self.block_size, lora_name, cache_salt, media)
        hashed = time.perf_counter()
        entry = (len(token_ids), local, sequence_hashes(local))
        seconds = (hashed - started, time.perf_counter() - hashed)
        if request_id is not None:
            self._hashes[request_id] = (*entry, namespace)
            if len(self._hashes) > _HASH_CACHE_SIZE:
                self._hashes.popitem(last=False)
        return (*entry, seconds)

    def _candidates(self, allowed: Collection[int] | None) -> list[WorkerKey]:
        if allowed is None:
            return [key for keys in self._workers.values() for key in keys]
        return [key for w in allowed for key in self._workers.get(w, ())]

    def overlap_scores(self, token_ids: Sequence[int], lora_name: str | None = None,
                       request_id: str | None = None, cache_salt: str | None = None,
                       media: MediaSalt | None = None) -> dict[WorkerKey, int]:
        local = self._hash(token_ids, request_id, lora_name, cache_salt, media)[1]
        return dict(self._find(local).scores) if self.mode != KvMode.LOAD_ONLY else {}

    def new_prefill_tokens(self, token_ids: Sequence[int], allowed: Collection[int] | None = None,
                           lora_name: str | None = None, request_id: str | None = None,
                           cache_salt: str | None = None, media: MediaSalt | None = None) -> int:
        """Prompt tokens left to prefill on the allowed worker that caches most of this prompt."""
        keys = set(self._candidates(allowed))
        scores = self.overlap_scores(token_ids, lora_name, request_id, cache_salt, media)
        best = max((n for key, n in scores.items() if key in keys), default=0)
        return max(len(token_ids) - best * self.block_size, 0)

    def _index(self) -> KvIndexer | ApproxIndexer:
        return self.indexer if self.mode == KvMode.KV_EVENTS else self.approx

    def _find(self, local: Sequence[int]):
        return self._index().find_matches(local)

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
    ) -> Selection:
        """Best (worker, dp_rank) for this prompt; books nothing. `thresholds`: busy thresholds of the
        request's router-queue class, in place of the pool's."""
        start = time.perf_counter()
        weight, temperature = self._effective(override)
        candidates = self._candidates(allowed)
        if not candidates:
            raise NoWorkers("no workers available" if allowed is None else "no allowed workers available")
        isl, local, seq, hashing = self._hash(token_ids, request_id, lora_name, cache_salt, media)
        hashed = time.perf_counter()
        overlaps: dict[WorkerKey, int] = {} if self.mode == KvMode.LOAD_ONLY else self._find(local).scores
        matched = time.perf_counter()
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
        x_of = self._features(potentials) if self._uses_ttft_cost(override, weight, temperature) else None
        logits = self._costs(potentials, x_of, seq, isl, weight)
        worker_id, dp_rank = self.selector.select(logits, temperature, self._index().tree.tree_size)
        end = time.perf_counter()
        self._stats["last_decision_us"] = (end - start) * 1e6
        overhead = RoutingOverhead(*hashing, matched - hashed, end - matched, end - start)
        chosen = (worker_id, dp_rank)
        x = x_of(chosen) if x_of is not None else None
        own = potentials[chosen][1] - self.active.active_prefill_tokens(chosen) if credit else None
        return Selection(worker_id, dp_rank, overlaps.get(chosen, 0), math.ceil(isl / self.block_size), logits, x,
                         own, overhead)

    def _costs(self, potentials: Mapping[WorkerKey, tuple[int, int]], x_of, seq: Sequence[int], isl: int,
               weight: float) -> dict[WorkerKey, float]:
        """Each candidate's cost: the ttft model's (`x_of` given: what the chosen worker will really see,
        which the model learns from), else the classic one or Dynamo's with its knobs."""
        active = self.active
        if x_of is not None:
            priced = (amortized(active, self.block_size, potentials, seq, isl)
                      if self.config.router_shared_prefix_amortization else potentials)
            logits = self.ttft.costs(priced, x_of if priced is potentials else self._features(priced),
                                     lambda k: priced[k][1] - active.active_prefill_tokens(k))
            self._price_memory_waits(logits, potentials, x_of)
            if self.config.router_step_wait:  # the rest of the running step comes before this request's own
                for key in logits:
                    if active.requests(key):  # an idle worker starts the request at once
                        logits[key] += self.steps.wait(key)
            return logits
        if self.knobs is None:
            return compute_logits(potentials, self.block_size, weight)
        return dynamo_costs(potentials, active.active_prefill_tokens, active.requests, isl, self.block_size,
                            self.knobs, weight, self.config.router_track_prefill_tokens)

    def _price_memory_waits(self, logits: dict, potentials: Mapping[WorkerKey, tuple[int, int]], x_of) -> None:
        """Adds the wait for KV blocks where kv_capacity says it is priced (a lower tier is in play)."""
        if not any(map(self._offloads, logits)):
            return
        waits = {key: self._memory_wait(key, potentials[key][0], x_of(key)) for key in logits}
        for key, wait in priced_waits(waits, self._offloads).items():
            logits[key] += wait

    def _offloads(self, key: WorkerKey) -> bool:
        """The worker keeps blocks in a lower tier (it has published some there)."""
        return self.mode == KvMode.KV_EVENTS and any(t.tree_size(key) for t in self.indexer.lower.values())

    def _memory_wait(self, key: WorkerKey, blocks_after_booking: int, x: Sequence[float]) -> float:
        """Seconds the request would wait on this worker for KV blocks (kv_capacity), its running
        answers ending at the pace finished ones took (before any has: the model's decode step)."""
        short = blocks_short(blocks_after_booking, self._total_kv_blocks(key))
        if not short:
            return 0.0
        pace = self.pace.seconds_per_token or self.ttft.decode_step(x)
        releases = self.active.releases(key, lambda booked, answer: finish_time(booked, answer, pace))
        return memory_wait(releases, short, self._clock())

    def _with_lower_tiers(self, overlaps: dict[WorkerKey, int], local: Sequence[int]) -> dict[WorkerKey, int]:
        """`overlaps` (device hits) plus the credit for prompt blocks held only in offloaded tiers."""
        if self.mode != KvMode.KV_EVENTS or not self.indexer.lower:
            return overlaps
        return tiered_overlaps(overlaps, self.indexer.lower_tier_matches(local), self._tier_weights)

    def _uses_ttft_cost(self, override, weight: float, temperature: float) -> bool:
        """The `ttft` cost unless the request or the deployment tunes Dynamo's cost: a per-request
        override, an overlap weight other than 1, a sampling temperature or one of Dynamo 1.6.1's
        cost knobs speak Dynamo's units."""
        return (self.config.router_cost_model == "ttft" and override is None and weight == 1.0
                and temperature == 0.0 and self.knobs is None)

    def _features(self, potentials: Mapping[WorkerKey, tuple[int, int]]):
        """Features of the ttft cost model per candidate: prefill tokens queued + new, KV usage after
        booking, running requests. Usage counts our own bookings (shared between replicas), not the
        workers' reports: those lag by a publish interval and would hold freed blocks against the
        worker that just served a prefix (they still feed busy detection). A worker whose KV size is
        not known yet (no card capacity, no load report) is measured against the largest size known
        among the candidates: "unknown" must not read as "empty"."""
        totals = {key: self._total_kv_blocks(key) for key in potentials}
        fallback = max((t for t in totals.values() if t), default=NOMINAL_KV_BLOCKS)

        def x_of(key: WorkerKey) -> tuple[float, ...]:
            blocks, tokens = potentials[key]
            usage = blocks / (totals.get(key) or fallback)  # over 1: the request waits for blocks to free
            return features(tokens, usage, self.active.requests(key))
        return x_of

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
        isl, local, seq, _ = self._hash(token_ids, request_id, lora_name, cache_salt, media)
        self._hashes.pop(request_id, None)
        key = (selection.worker_id, selection.dp_rank)
        self.active.add_request(key, request_id, seq, isl, selection.overlap_blocks,
                                self.output_blocks_for(isl, max_tokens), selection.prefill_tokens, max_tokens)
        if selection.features is not None:
            self._booked[request_id] = (self._clock(), selection.features)
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
        booked = self._booked.pop(request_id, None)
        if booked is not None:  # the TTFT this booking saw teaches the cost model
            self.ttft.observe(booked[1], self._clock() - booked[0])
        return self.active.mark_prefill_completed(request_id)

    def free(self, request_id: str) -> bool:
        self._hashes.pop(request_id, None)
        self._booked.pop(request_id, None)
        booking = self.active.booking(request_id)
        if booking is not None:
            self.pace.observe(self._clock() - booking[0], booking[1])
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
            "ttft_coefficients": [round(c, 6) for c in self.ttft.coef],
            "ttft_observations": self.ttft.observations,
            "workers": {f"{w}:{r}": v for (w, r), v in self.active.loads().items()},
            "tree_sizes": {f"{w}:{r}": v for (w, r), v in self._tree_sizes().items()},
            "approx": {"expired_blocks": self.approx.expired_blocks, "pruned_blocks": self.approx.pruned_blocks,
                       "evicted_blocks": self.approx.evicted_blocks},
        }

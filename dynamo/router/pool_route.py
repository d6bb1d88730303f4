"""One pool's KV routing state inside the `kv` policy (kv_policy.py): its KvRouter, its router queue, the
snapshot of the pool it was last reconciled with, the mode in effect, and what a request may use of it."""

from __future__ import annotations

import dataclasses
from typing import Callable

from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.kv_router import KvRouter, NoWorkers, PrefixMatch, Selection
from dynamo.router.mode_report import ModeReport
from dynamo.router.policy import WorkerInfo, WorkerPool, candidates
from dynamo.router.policy_profile import PolicyProfile
from dynamo.router.class_queue import Ticket
from dynamo.router.router_queue import RouterQueue


class PoolRoute:
    """The KvRouter of one pool and the snapshot it was last reconciled with."""

    def __init__(self, pool: WorkerPool, router: KvRouter, profile: PolicyProfile, profile_model: str) -> None:
        self.name = pool.name
        self.router = router
        self.profile_model = profile_model  # whose --router-policy-config profile and busy thresholds apply
        self.queue = RouterQueue(router.config, profile)  # per pool: one model's busy workers never hold up another's
        self.pool = dataclasses.replace(pool, workers=(), version=-1)
        self.report = ModeReport(router.mode, "configured", False)

    def allowed(self, request: PreprocessedRequest, exclude: set[int]) -> list[int]:
        """The pool's workers this request may go to; NoWorkers when none."""
        allowed = [w.instance_id for w in candidates(self.pool, request, exclude)]
        if not allowed:
            raise NoWorkers(self.pool.model)
        return allowed

    def lora(self, request: PreprocessedRequest) -> str | None:
        """The LoRA adapter whose KV namespace the request's prompt hashes in: its pool's (the frontend's adapter
        pools), else the request's own (the router service's one pool holds the base model and its adapters)."""
        return self.pool.lora_name or request.lora_name

    def enter_queue(self, queue: RouterQueue, request: PreprocessedRequest, exclude: set[int], klass: int | None,
                    new_tokens: int | None, match: PrefixMatch | None) -> Ticket:
        """The request waits in `queue` (the route's, when it started waiting), classed and scored by its profile."""
        hints = request.routing
        # Dynamo's queue hint is latency_sensitivity (seconds ahead); without it, priority jumps the line.
        jump = None if hints is None else (hints.latency_sensitivity if hints.latency_sensitivity is not None
                                           else hints.priority)
        if new_tokens is None and queue.profile.needs_uncached:
            new_tokens = self.new_tokens(request, exclude, match)
        prompt = len(request.token_ids)
        new = prompt if new_tokens is None else new_tokens
        klass = queue.profile.class_index(None, new) if klass is None else klass
        allowed = frozenset(w.instance_id for w in candidates(self.pool, request, exclude))
        return queue.enter(queue.score(jump or 0.0, new, klass), (hints.strict_priority or 0) if hints else 0, klass,
                           new, prompt, len(self.pool.workers), allowed)

    def new_tokens(self, request: PreprocessedRequest, exclude: set[int], match: PrefixMatch | None) -> int:
        """Prompt tokens left to prefill on the allowed worker that caches most of it (Dynamo's uncached ISL)."""
        return self.router.new_prefill_tokens(match, [w.instance_id for w in candidates(self.pool, request, exclude)])

    def worker(self, selection: Selection) -> WorkerInfo:
        worker = self.pool.get(selection.worker_id)
        assert worker is not None  # the router only knows this pool's workers
        return worker

    def still_paired(self, instance_id: int) -> Callable[[], bool]:
        """Whether a worker still feeds this route's router: neither gone from the pool nor its router
        replaced (a block size adopted) since the pairing was asked for."""
        router = self.router
        return lambda: self.router is router and any(w.instance_id == instance_id for w in self.pool.workers)

    def health(self) -> dict:
        """The route's part of the policy's `/health`."""
        stats = self.router.stats()
        return {
            "mode": self.report.mode, "reason": self.report.reason, "block_size": self.router.block_size,
            "workers": sorted(w.instance_id for w in self.pool.workers),
            "kv_hit_rate": round(stats["kv_hit_rate"], 4),
            "workers_needing_resync": stats["workers_needing_resync"],
            "indexed_blocks": stats["tree_sizes"],
            "cost_model": stats["cost_model"], "ttft_coefficients": stats["ttft_coefficients"],
            "ttft_observations": stats["ttft_observations"], "queue": self.queue.stats(),
        }

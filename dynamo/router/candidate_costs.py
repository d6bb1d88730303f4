"""The price of each candidate worker for one KV routing decision, and what the `ttft` cost model
learns from: predicted seconds to first token (the linear ttft model over the worker's load after
booking, plus the wait for KV blocks where it is priced and the rest of the worker's engine step),
else the classic cost or Dynamo 1.6.1's with its knobs.

`CandidateCosts` is the one owner of the learned state: the ttft model and the features each
booking saw (taught by the TTFT it then got), the pace at which answers end, and each worker's
place in its engine step. `KvRouter` asks it for logits and tells it of bookings, first tokens,
outputs and ends.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from dynamo.router.active_sequences import ActiveSequences
from dynamo.router.config import KvRouterConfig
from dynamo.router.cost_model import TtftModel, features
from dynamo.router.dynamo_cost import DynamoCostKnobs, dynamo_costs
from dynamo.router.indexer import WorkerKey
from dynamo.router.kv_capacity import AnswerPace, blocks_short, finish_time, memory_wait, priced_waits
from dynamo.router.prefix_amortization import amortized
from dynamo.router.selector import compute_logits
from dynamo.router.step_clock import StepClock

# KV blocks assumed for a worker when no candidate's size is known (the engines' default, as Dynamo's mocker).
NOMINAL_KV_BLOCKS = 16384

Potentials = Mapping[WorkerKey, tuple[int, int]]  # candidate -> (KV blocks, prefill tokens) after booking


class CandidateCosts:
    def __init__(self, block_size: int, config: KvRouterConfig, active: ActiveSequences, clock: Callable[[], float],
                 total_kv_blocks: Callable[[WorkerKey], int | None], offloads: Callable[[WorkerKey], bool]) -> None:
        self.block_size = block_size
        self.config = config  # its cost settings, fixed for the router's life
        knobs = DynamoCostKnobs.of(config)
        self.knobs = None if knobs.default else knobs  # decided once, not per request
        self.active = active
        self.ttft = TtftModel()
        self.pace = AnswerPace()
        self.steps = StepClock(clock)  # each worker's place in its engine step (step_clock.py)
        self._clock = clock
        self._total_kv_blocks = total_kv_blocks
        self._offloads = offloads  # the worker keeps evicted blocks in a lower tier
        self._booked: dict[str, tuple[float, tuple[float, ...]]] = {}  # request -> (booked at, features)

    # -- pricing -------------------------------------------------------------------------
    def uses_ttft(self, override: Any, weight: float, temperature: float) -> bool:
        """The `ttft` cost unless the request or the deployment tunes Dynamo's cost: a per-request
        override, an overlap weight other than 1, a sampling temperature or one of Dynamo 1.6.1's
        cost knobs speak Dynamo's units."""
        return (self.config.router_cost_model == "ttft" and override is None and weight == 1.0
                and temperature == 0.0 and self.knobs is None)

    def costs(self, potentials: Potentials, x_of, seq: Sequence[int], isl: int,
              weight: float) -> dict[WorkerKey, float]:
        """Each candidate's cost: the ttft model's (`x_of` given: what the chosen worker will really see,
        which the model learns from), else the classic one or Dynamo's with its knobs."""
        active = self.active
        if x_of is not None:
            priced = (amortized(active, self.block_size, potentials, seq, isl)
                      if self.config.router_shared_prefix_amortization else potentials)
            logits = self.ttft.costs(priced, x_of if priced is potentials else self.features(priced),
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

    def features(self, potentials: Potentials):
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

    def _price_memory_waits(self, logits: dict, potentials: Potentials, x_of) -> None:
        """Adds the wait for KV blocks where kv_capacity says it is priced (a lower tier is in play)."""
        if not any(map(self._offloads, logits)):
            return
        waits = {key: self._memory_wait(key, potentials[key][0], x_of(key)) for key in logits}
        for key, wait in priced_waits(waits, self._offloads).items():
            logits[key] += wait

    def _memory_wait(self, key: WorkerKey, blocks_after_booking: int, x: Sequence[float]) -> float:
        """Seconds the request would wait on this worker for KV blocks (kv_capacity), its running
        answers ending at the pace finished ones took (before any has: the model's decode step)."""
        short = blocks_short(blocks_after_booking, self._total_kv_blocks(key))
        if not short:
            return 0.0
        pace = self.pace.seconds_per_token or self.ttft.decode_step(x)
        releases = self.active.releases(key, lambda booked, answer: finish_time(booked, answer, pace))
        return memory_wait(releases, short, self._clock())

    # -- learning ------------------------------------------------------------------------
    def booked(self, request_id: str, x: tuple[float, ...] | None) -> None:
        """The request was booked where the ttft model saw `x` (None: it was not priced by it)."""
        if x is not None:
            self._booked[request_id] = (self._clock(), x)

    def first_token(self, request_id: str) -> None:
        booked = self._booked.pop(request_id, None)
        if booked is not None:  # the TTFT this booking saw teaches the cost model
            self.ttft.observe(booked[1], self._clock() - booked[0])

    def finished(self, request_id: str) -> None:
        """Call before the booking is released: its answer's pace is read from it."""
        self._booked.pop(request_id, None)
        booking = self.active.booking(request_id)
        if booking is not None:
            self.pace.observe(self._clock() - booking[0], booking[1])

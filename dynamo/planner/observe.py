"""What the planner sees of the workers: their model cards in discovery (role and engine
limits, Dynamo's MDC `runtime_config`) and their forward-pass metrics on the event plane.

`FpmCollector` subscribes to `forward-pass-metrics` on every component that serves a
worker card in the namespace, keeps each engine's latest FPM, feeds the per-pool perf
models, and keeps running averages of the workload (ISL, decode batch and length) and, per
engine, how busy it was with prefill since the last load tick (`WorkWindow`): the load a scale-down
must fit into one replica fewer, which a snapshot of the queue cannot tell.
An engine's FPM counts only while the engine is in discovery and its FPM is fresher
than `fpm_stale_seconds` (relays repeat the last message every second when idle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from dynamo.llm.forward_pass import FPM_TOPIC, ForwardPassMetrics, fpm_decoder
from dynamo.llm.model_card import WorkerType, card_decoder
from dynamo.planner.config import PlannerConfig
from dynamo.planner.load_scaling import EngineLimits
from dynamo.planner.perf_model import PerfModel, agg_model, decode_model, prefill_model, sample
from dynamo.runtime.event_plane.base import create_subscriber
from dynamo.runtime.records import MDC, split_key

log = logging.getLogger(__name__)


@dataclass
class WorkWindow:
    """How busy one engine was with prefill since `opened`: the wall time of its iterations that prefilled, per
    second. The relay thins FPMs and repeats the last one while idle, so iterations are counted from
    `counter_id` (repeats add none), each at the mean of the distinct messages sampled.

    A record right after an idle message has no wall time of its own to count: vLLM without
    `--enable-logging-iteration-details` times a step from the previous record, so the first one after an idle
    gap carries the gap (a 50 ms prefill every 3 s would read 100% busy). It counts at the engine's mean
    prefill step measured before (`step`), or the `estimate` the caller gives (the perf model); with neither the
    window is unknown. A lower `counter_id` is a restarted engine: a new baseline, nothing counted."""

    opened: float | None = None  # None until a first FPM gives the baseline counter
    counter: int | None = None  # the last distinct message's; None before the first
    iterations: int = 0
    busy: float = 0.0  # seconds, over the sampled messages with a wall time of their own
    samples: int = 0
    untimed: int = 0  # sampled prefill records right after idle: wall time unknown
    idle: bool = False  # the last distinct message said the engine was idle
    step: float | None = None  # the engine's mean prefill step (s), from timed records, kept across windows
    estimate: float = 0.0  # the caller's estimates of the untimed records' steps (s), summed
    unestimated: int = 0  # untimed records the caller could not estimate either

    def add(self, fpm: ForwardPassMetrics, now: float, estimate: Callable[[], float | None] = lambda: None) -> bool:
        """Count a message; True when it is a new one whose `wall_time` is its step's own (what a perf model
        may learn from). `estimate()`: the step time of `fpm` by other means, asked for if its own is unknown."""
        if self.opened is None:
            self.opened = now
        if self.counter is None or fpm.counter_id < self.counter:
            self.counter, self.idle = fpm.counter_id, fpm.idle  # first message, or the engine restarted
            return False
        if fpm.counter_id == self.counter:
            return False  # the relay's repeat of a message already counted
        self.iterations += fpm.counter_id - self.counter
        self.counter, after_idle, self.idle = fpm.counter_id, self.idle, fpm.idle
        self.samples += 1
        if not fpm.scheduled_requests.sum_prefill_tokens:
            return not after_idle
        if after_idle:
            self.untimed += 1
            guess = estimate() if self.step is None else None
            self.estimate, self.unestimated = ((self.estimate, self.unestimated + 1) if guess is None
                                               else (self.estimate + guess, self.unestimated))
            return False
        self.busy += fpm.wall_time
        self.step = fpm.wall_time if self.step is None else self.step + 0.1 * (fpm.wall_time - self.step)
        return True

    def take(self, now: float, min_window: float) -> float | None:
        """The busy share (engine-seconds per second) since `opened`, then a new window from `now`; None while
        the window is shorter than `min_window` (an engine just seen: too little to judge a scale-down on), and
        when it cannot be told: no new message and the last one not idle, or untimed records not estimable."""
        if self.opened is None or now - self.opened < min_window or now <= self.opened:
            return None
        untimed = self.untimed * self.step if self.step is not None else None if self.unestimated else self.estimate
        if not self.samples:
            share = 0.0 if self.idle else None
        elif untimed is None:
            share = None
        else:
            share = (self.busy + untimed) / self.samples * self.iterations / (now - self.opened)
        self.opened, self.iterations, self.busy, self.samples = now, 0, 0.0, 0
        self.untimed, self.estimate, self.unestimated = 0, 0.0, 0
        return share


@dataclass
class Engine:
    role: str
    component: str
    limits: EngineLimits
    model: str
    latest: ForwardPassMetrics | None = None
    seen_at: float = 0.0
    work: WorkWindow = field(default_factory=WorkWindow)


class Ewma:
    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


@dataclass
class WorkloadStats:
    isl: Ewma = field(default_factory=Ewma)
    num_decode: Ewma = field(default_factory=Ewma)
    decode_len: Ewma = field(default_factory=Ewma)


def limits_of(card) -> EngineLimits:
    rc = card.runtime_config
    blocks = rc.total_kv_blocks or 0
    return EngineLimits(context_length=card.context_length,
                        max_kv_tokens=blocks * card.kv_cache_block_size or 1 << 20,
                        max_num_batched_tokens=rc.max_num_batched_tokens or 8192,
                        max_num_seqs=rc.max_num_seqs or 256)


class FpmCollector:
    def __init__(self, store, cfg: PlannerConfig, metrics=None) -> None:
        self.store = store
        self.cfg = cfg
        self.metrics = metrics
        self.engines: dict[tuple[int, int], Engine] = {}  # (instance id, dp rank)
        self.cards: dict[int, Engine] = {}  # instance id -> engine template from its card
        self._last_model: str | None = None  # the model the cards last named (kept at zero replicas)
        self.models: dict[str, PerfModel] = {}
        self.stats = {role: WorkloadStats() for role in ("prefill", "decode")}
        self._subs: dict[tuple[str, str], object] = {}  # (namespace, component) -> FPM subscriber
        self._tasks: list[asyncio.Task] = []
        self.clock = time.monotonic  # FPM arrival times and load windows (a simulation replays its own)

    async def refresh(self) -> None:
        """Re-read the worker cards; subscribe to components seen for the first time."""
        cards = await self.store.get_prefix(f"{MDC}{self.cfg.namespace}")  # and its suffixed namespaces
        seen: dict[int, Engine] = {}
        for key, raw in cards.items():
            try:
                eid, iid = split_key(MDC, key)
                card = card_decoder.decode(raw) if in_namespace(eid.namespace, self.cfg.namespace) else None
            except Exception as exc:
                log.debug("unreadable card %s: %s", key, exc)
                continue
            if card is None:  # another namespace that only starts alike ("dynamo2")
                continue
            role = "prefill" if card.worker_type == WorkerType.PREFILL else "decode"
            seen[iid] = Engine(role, eid.component, limits_of(card), card.display_name)
            if (eid.namespace, eid.component) not in self._subs:
                await self._subscribe(eid.namespace, eid.component)
        self.cards = seen
        for key in [k for k in self.engines if k[0] not in seen]:
            del self.engines[key]  # left discovery (scaled down, or died)
        for engine in seen.values():
            self._ensure_model(engine)

    def _ensure_model(self, engine: Engine) -> None:
        if engine.role in self.models:
            return
        lim, kw = engine.limits, dict(max_samples=self.cfg.max_num_fpm_samples,
                                      bucket_size=self.cfg.fpm_sample_bucket_size,
                                      min_samples=self.cfg.load_min_observations)
        if engine.role == "prefill":
            self.models["prefill"] = prefill_model(lim.max_num_batched_tokens, **kw)
        elif self.cfg.mode == "agg":
            self.models["decode"] = agg_model(lim.max_num_batched_tokens, lim.max_kv_tokens, **kw)
        else:
            self.models["decode"] = decode_model(lim.max_num_seqs, lim.max_kv_tokens, **kw)

    async def _subscribe(self, namespace: str, component: str) -> None:
        sub = await create_subscriber(None, self.store, namespace, component, FPM_TOPIC)
        self._subs[(namespace, component)] = sub
        self._tasks.append(asyncio.get_running_loop().create_task(self._consume(sub), name=f"fpm-{component}"))
        log.info("planner: following forward-pass metrics of %s.%s", namespace, component)

    async def _consume(self, sub) -> None:
        async for instance_id, payload in sub:
            try:
                fpm = fpm_decoder.decode(payload)
            except Exception as exc:
                log.debug("bad FPM from %x: %s", instance_id, exc)
                continue
            self.observe(instance_id, fpm)

    def observe(self, instance_id: int, fpm: ForwardPassMetrics) -> None:
        if self.metrics is not None:
            self.metrics.fpm_messages.inc()
        card = self.cards.get(instance_id)
        if card is None:
            return  # not (or no longer) in discovery
        key = (instance_id, fpm.dp_rank)
        engine = self.engines.get(key)
        if engine is None:
            engine = self.engines[key] = Engine(card.role, card.component, card.limits, card.model)
        engine.latest, engine.seen_at = fpm, self.clock()
        model = self.models.get(card.role)
        x = sample("agg" if self.cfg.mode == "agg" else card.role, fpm)
        known = model is not None and x is not None and model.ready
        timed = engine.work.add(fpm, engine.seen_at, lambda: model.predict(x) if known else None)
        if model is not None and x is not None and timed:  # a step timed from an idle gap would teach the gap
            model.add(x, fpm.wall_time)
        self._update_stats(card.role, fpm)

    def _update_stats(self, role: str, fpm: ForwardPassMetrics) -> None:
        s, q, st = fpm.scheduled_requests, fpm.queued_requests, self.stats[role]
        if q.num_prefill_requests:
            st.isl.add(q.sum_prefill_tokens / q.num_prefill_requests)
        elif s.num_prefill_requests:
            st.isl.add((s.sum_prefill_tokens + s.sum_prefill_kv_tokens) / s.num_prefill_requests)
        if s.num_decode_requests:
            st.num_decode.add(s.num_decode_requests)
            st.decode_len.add(s.sum_decode_kv_tokens / s.num_decode_requests)

    def fresh(self, role: str) -> list[tuple[ForwardPassMetrics, EngineLimits]]:
        return [(e.latest, e.limits) for e in self._fresh(role).values()]

    def prefill_busy(self, role: str) -> float | None:
        """Engine-seconds per second the pool's engines spent in iterations that prefilled, since the last call
        (summed, each over its own window); None when some engine has no full window yet or its load cannot be
        told (`WorkWindow.take`): the pool then holds. Once per load tick."""
        now, min_window = self.clock(), self.cfg.load_adjustment_interval_seconds / 2
        rates = [e.work.take(now, min_window) for e in self._fresh(role).values()]
        return sum(rates) if rates and None not in rates else None

    def reporting(self, role: str) -> list[tuple[int, int]]:
        """(instance id, dp rank) of each engine whose FPM counts now: what `fresh` decides on."""
        return list(self._fresh(role))

    def _fresh(self, role: str) -> dict[tuple[int, int], Engine]:
        horizon = self.clock() - self.cfg.fpm_stale_seconds
        return {k: e for k, e in self.engines.items()
                if e.role == role and e.latest is not None and e.seen_at >= horizon}

    def model_name(self) -> str | None:
        seen = next((e.model for e in self.cards.values()), None)
        if seen is not None:  # remembered: a pool scaled to zero still has a model to wait for
            self._last_model = seen
        return self.cfg.model_name or seen or self._last_model

    async def namespaces_elsewhere(self) -> list[str]:
        """The other namespaces where worker cards are (what a planner reading the wrong one is told)."""
        found = set()
        for key in await self.store.get_prefix(MDC) if self.store is not None else ():
            try:
                found.add(split_key(MDC, key)[0].namespace)
            except ValueError:
                continue
        return sorted(ns for ns in found if not in_namespace(ns, self.cfg.namespace))

    def add_synthetic(self, role: str, x: tuple[float, ...], wall_s: float) -> None:
        """Seed a perf model (profile data) before any live FPM arrives."""
        model = self.models.get(role)
        if model is not None:
            model.add(x, wall_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs.values():
            await sub.close()


def in_namespace(worker_namespace: str, namespace: str) -> bool:
    """The planner's namespace, or it with DYN_NAMESPACE_WORKER_SUFFIX appended ("{namespace}-{suffix}"), where
    Dynamo's workers register when the suffix is set."""
    return worker_namespace == namespace or worker_namespace.startswith(f"{namespace}-")

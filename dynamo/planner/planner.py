"""The planner loop: every `load_adjustment_interval_seconds` a load tick (reactive
targets, or the `sla` perf-model estimates), every `throughput_adjustment_interval_seconds`
a throughput tick (`sla` only: predicted demand from Prometheus over per-engine
capacity). Each tick yields one decision per pool, logged with its reason; targets are
fitted to the GPU budget and applied through the connector (or only logged, `advisory`).

Guards, where Dynamo 1.6.1's users got hurt:
- no traffic is a reason to scale down, not to skip (idle engines heartbeat zeros;
  Prometheus demand 0 means 0, and only unknown demand holds);
- a scale-up whose replicas are not ready within `replica_ready_timeout_seconds` is
  given up (the pool is set back to its ready count) instead of blocking forever, and
  scale-down stays possible while replicas are pending;
- the max GPU budget is never exceeded, whatever the loops ask for;
- as Dynamo, a load tick decides only on FPMs that cover the pool: when the engines reporting
  differ from the ready replicas (a new replica not reporting yet), the pool holds
  (`worker_count_mismatch`), and in disagg mode so does the other pool;
- target `sla` scales down only when the load measured over the pool fits one replica fewer, TTFT and ITL
  both where the pool serves both (`sla.py`), and the TTFT side only after SLA_DOWN_TICKS load ticks in a row
  allowed it (a disagg decode pool goes down as Dynamo's),
  so a steady load that needed N replicas does not go back to N-1 (QA: prefill flapped 1 -> 2 -> 1);
- pools with ready replicas that publish nothing in the planner's namespace for a minute are
  warned about, with the namespaces their cards are in (`watch.py`), instead of a silent hold.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from dynamo.planner import sla
from dynamo.planner.bootstrap import seed_profile, startup_profile
from dynamo.planner.budget import fit_budget, gpus
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState
from dynamo.planner.load_scaling import WORKER_COUNT_MISMATCH, Decision, fpm_coverage_gap, reactive_decision
from dynamo.planner.metrics import PlannerMetrics
from dynamo.planner.observe import FpmCollector
from dynamo.planner.predictors import make_predictor
from dynamo.planner.watch import SilentPools, describe_store
from dynamo.planner.prometheus import (PrometheusClient, TrafficObservation, observe, router_waiting_query,
                                       waiting_query)
from dynamo.profiler.interpolation import Profile

log = logging.getLogger("dynamo.planner")
# Target `sla`: load ticks in a row a scale-down judged on the measured prefill load (a prefill pool, an agg pool's
# TTFT side) must be allowed on before it is applied. One FPM window of a closed-loop load can dip under the busy
# limit while the load is steady; undoing the scale-up on it flaps. Decode pools go down as Dynamo's (none).
SLA_DOWN_TICKS = 3


class Planner:
    def __init__(self, cfg: PlannerConfig, connector: Connector, collector: FpmCollector,
                 prometheus: PrometheusClient | None = None, metrics: PlannerMetrics | None = None) -> None:
        self.cfg = cfg
        self.connector = connector
        self.collector = collector
        self.prometheus = prometheus
        self.metrics = metrics or PlannerMetrics()
        self.predictor = make_predictor(cfg.load_predictor, cfg)
        self.lower_bound: dict[str, int] = {}
        self.pending_since: dict[str, float] = {}
        self.last_obs = TrafficObservation()
        self.decisions: list[Decision] = []  # history, for tests and reports
        self.initialized = False
        self.profile: tuple[Profile, str] | None = None  # the perf models' starting points, and their source
        self._seeded: set[str] = set()  # roles whose perf model took the profile's points
        self._last_gpu_tick = time.monotonic()
        self._failing: dict[str, str] = {}  # loop -> its last failure, until a tick succeeds
        self.silent = SilentPools(cfg.namespace, store=describe_store(collector.store))
        self._down_streak: dict[str, int] = {}  # role -> load ticks in a row its sla decision allowed a scale-down

    # ---- loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.connector.start()
        self.initialized = True  # healthy from here, also while the profile below is estimated
        if not await self._load_profile(stop):
            return
        interval = self.cfg.scheduling.scale_interval_seconds
        next_load = next_thpt = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if self.cfg.enable_throughput_scaling and now >= next_thpt:
                next_thpt = now + self.cfg.throughput_adjustment_interval_seconds
                await self._guarded("throughput", self.throughput_tick)
            if self.cfg.enable_load_scaling and now >= next_load:
                next_load = now + self.cfg.load_adjustment_interval_seconds
                await self._guarded("load", self.load_tick)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def _load_profile(self, stop: asyncio.Event) -> bool:
        """The profile the perf models seed from, before the first tick (an AIConfigurator estimate takes
        seconds); False when `stop` came first."""
        task = asyncio.ensure_future(startup_profile(self.cfg))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            task.cancel()  # an estimate's thread runs on; its result is dropped
            await asyncio.gather(task, return_exceptions=True)
            return False
        self.profile = task.result()
        return True

    async def _guarded(self, loop: str, tick) -> None:
        self.metrics.ticks.labels(loop).inc()
        try:
            with self.metrics.tick_duration.time():
                await tick()
        except Exception as exc:  # one bad tick (a connector timeout, Prometheus down) must not end the loop
            self.metrics.tick_errors.labels(loop).inc()
            # said once per distinct failure (a Prometheus that is down would repeat it every tick)
            repeat = self._failing.get(loop) == str(exc)
            log.log(logging.DEBUG if repeat else logging.WARNING, "planner %s tick failed: %s%s", loop, exc,
                    "" if repeat else " (repeats are logged at debug level until it recovers)")
            self._failing[loop] = str(exc)
            return
        if self._failing.pop(loop, None) is not None:
            log.info("planner %s tick recovered", loop)

    # ---- ticks ---------------------------------------------------------------------

    async def load_tick(self) -> None:
        await self.collector.refresh()
        self._seed_once()
        state = await self._state()
        waiting = await self._waiting() if any(state[r].desired == 0 for r in self.cfg.roles) else None
        gaps = self._coverage_gaps(state)
        decisions = [self._from_zero(role, state[role], waiting) or self._skipped(role, state[role], gaps)
                     or self._load_decision(role, state[role]) for role in self.cfg.roles]
        await self._apply("load", decisions, state)

    async def throughput_tick(self) -> None:
        await self.collector.refresh()
        self._seed_once()
        state = await self._state()
        decisions = await self._throughput_decisions(state)
        if decisions is None:
            return
        for d in decisions:
            self.metrics.predicted_replicas[d.role].set(d.target)
        if self.cfg.enable_load_scaling:  # the load loop scales above this floor
            self.lower_bound = {d.role: d.target for d in decisions}
            decisions = [Decision(d.role, d.current, max(d.current, d.target), d.reason) for d in decisions]
        await self._apply("throughput", decisions, state)

    # ---- load loop -----------------------------------------------------------------

    async def _waiting(self) -> float | None:
        """Requests held for the model: by the frontends (`dynamo_frontend_queued_requests`) and by the pool's
        router services (a global router's pool). At zero replicas no engine reports load, so this is the only
        demand there is. None without Prometheus or a model name, or when neither series exists."""
        model = self.collector.model_name()
        if self.prometheus is None or model is None:
            return None
        found = [await self.prometheus.scalar(q) for q in (waiting_query(model, self.cfg.namespace),
                                                            router_waiting_query(self.cfg.namespace))]
        values = [v for v in found if v is not None]
        return sum(values) if values else None

    def _from_zero(self, role: str, pool: PoolState, waiting: float | None) -> Decision | None:
        """A pool scaled to zero (min_endpoint 0) that requests wait for: back to its minimum, at least 1."""
        if pool.desired != 0 or not waiting:
            return None
        target = min(max(1, self.cfg.min_for(role)), self.cfg.max_for(role))
        return Decision(role, 0, target, f"scale from zero: {waiting:g} request(s) waiting for a worker")

    def _coverage_gaps(self, state: dict[str, PoolState]) -> dict[str, str]:
        """{role: why its FPMs do not cover its ready replicas}, for the pools where they do not."""
        gaps = {}
        for role in self.cfg.roles:
            gap = fpm_coverage_gap(self.collector.reporting(role), state[role].ready)
            if gap is not None:
                gaps[role] = gap
                log.warning("planner: worker count mismatch for %s: %s; load decision skipped", role, gap)
        return gaps

    def _skipped(self, role: str, pool: PoolState, gaps: dict[str, str]) -> Decision | None:
        """A hold when the load tick must not decide for `role`: its FPMs do not cover its replicas, or (disagg,
        as Dynamo's joint decision) the other pool's do not."""
        if role in gaps:
            why = f"{role}: {gaps[role]}"
        elif self.cfg.mode == "disagg" and gaps:
            other = next(iter(gaps))
            why = f"{other}: {gaps[other]} (disagg: both pools hold)"
        else:
            return None
        self.metrics.load_skipped.labels(role, WORKER_COUNT_MISMATCH).inc()
        return Decision(role, pool.desired, pool.desired, f"{WORKER_COUNT_MISMATCH}: {why}; load decision skipped")

    def _load_decision(self, role: str, pool: PoolState) -> Decision:
        engines = self.collector.fresh(role)
        if self.cfg.optimization_target == "sla":
            d = self._sla_load_decision(role, engines, pool.desired)
        else:
            d = reactive_decision(self.cfg, role, engines, pool.desired)
        floor = self.lower_bound.get(role, 0)
        if d.target < floor:  # never below the throughput loop's floor (it raises pools itself)
            d = Decision(role, d.current, min(floor, d.current), d.reason + f"; throughput-loop floor {floor}")
        if d.target > d.current and pool.ready < pool.desired:
            d = Decision(role, d.current, d.current, d.reason + f"; {pool.desired - pool.ready} replica(s) "
                         "still starting, no further scale-up")
        return d

    def _sla_load_decision(self, role: str, engines, current: int) -> Decision:
        model = self.collector.models.get(role)
        if model is None or not model.ready:
            have = model.count if model else 0
            self._down_streak[role] = 0  # "in a row": a tick judged on nothing breaks the streak
            return Decision(role, current, current, f"sla {role}: perf model has {have}/"
                            f"{self.cfg.load_min_observations} samples, hold")
        w = self._workload(role)
        if self.cfg.mode == "agg":  # hysteresis on the TTFT side only: the ITL side is Dynamo's
            d = sla.sla_agg_decision(self.cfg, model, engines, w, current, role, steady=self._steady_down)
        elif role == "decode":  # Dynamo's decode decision: it never flapped, no hysteresis
            d = sla.sla_decode_decision(self.cfg, model, engines, w, current, role)
        else:
            d = self._steady_down(sla.sla_prefill_decision(self.cfg, model, engines, w, current, role))
        for key, value in d.estimate.items():  # the gauges show what the decision was judged on
            self.metrics.estimated[key].set(value)
        return d

    def _steady_down(self, d: Decision) -> Decision:
        """A scale-down judged on the measured prefill load only once it was allowed SLA_DOWN_TICKS load ticks in
        a row (hysteresis; the prefill pool's decision, and an agg pool's TTFT side)."""
        if d.target >= d.current:
            self._down_streak[d.role] = 0
            return d
        n = self._down_streak[d.role] = self._down_streak.get(d.role, 0) + 1
        if n < SLA_DOWN_TICKS:
            return Decision(d.role, d.current, d.current, f"{d.reason}; allowed {n} load tick(s) in a row of the "
                            f"{SLA_DOWN_TICKS} a scale-down needs, hold", d.estimate)
        self._down_streak[d.role] = 0
        return d

    def _workload(self, role: str) -> sla.Workload:
        st = self.collector.stats[role]
        obs = self.last_obs
        isl = st.isl.value or obs.isl or self.collector.stats["prefill"].isl.value or 0.0
        return sla.Workload(isl=isl, osl=obs.osl or 0.0, kv_hit=obs.kv_hit_rate or 0.0,
                            num_decode=st.num_decode.value or 0.0, decode_len=st.decode_len.value or 0.0,
                            prefill_busy=self.collector.prefill_busy(role))

    # ---- throughput loop -----------------------------------------------------------

    async def _throughput_decisions(self, state: dict[str, PoolState]) -> list[Decision] | None:
        interval = int(self.cfg.throughput_adjustment_interval_seconds)
        model_name = self.collector.model_name()
        if self.prometheus is None or model_name is None:
            log.info("planner throughput tick: %s, hold", "no Prometheus" if self.prometheus is None else "no model yet")
            return None
        obs = await observe(self.prometheus, interval, model_name, self.cfg.namespace)
        self._record_observation(obs, interval)
        if obs.num_req is None:
            log.info("planner throughput tick: demand unknown (no frontend request counters in Prometheus), hold")
            return None
        self.predictor.observe(obs.num_req)
        demand = self.predictor.predict() / interval
        self.metrics.predicted_rps.set(demand)
        return [self._capacity_decision(role, state[role].desired, demand, obs) for role in self.cfg.roles]

    def _record_observation(self, obs: TrafficObservation, interval: int) -> None:
        for key in ("isl", "osl", "kv_hit_rate"):  # keep the last known averages through idle intervals
            if getattr(obs, key) is not None:
                setattr(self.last_obs, key, getattr(obs, key))
        self.last_obs.num_req = obs.num_req
        for key in ("ttft_ms", "itl_ms", "request_duration_s", "isl", "osl", "kv_hit_rate"):
            value = getattr(obs, key)
            self.metrics.observed[key].set(value if value is not None else math.nan)
        self.metrics.observed["requests_per_second"].set((obs.num_req or 0.0) / interval)
        for gauge, value in ((self.metrics.predicted_isl, self.last_obs.isl), (self.metrics.predicted_osl,
                                                                                self.last_obs.osl)):
            gauge.set(value if value is not None else math.nan)  # the lengths the capacity decision sizes for

    def _capacity_decision(self, role: str, current: int, demand: float, obs: TrafficObservation) -> Decision:
        head = f"sla throughput {role}: predicted {demand:.2f} req/s"
        if demand <= 0:
            target = sla.replicas_for(0, 1, current, self.cfg, role)
            return Decision(role, current, target, f"{head}: no traffic, down to the minimum")
        model = self.collector.models.get(role)
        isl, osl = self.last_obs.isl, self.last_obs.osl
        if model is None or not model.ready or not isl:
            return Decision(role, current, current, f"{head}: perf model or ISL not known yet, hold")
        lim = next((e.limits for e in self.collector.cards.values() if e.role == role), None)
        if lim is None:
            return Decision(role, current, current, f"{head}: no {role} engine in discovery, hold")
        accept = 1.0 + self.cfg.speculative_nextn
        if role == "prefill" or self.cfg.mode == "agg":
            cap = sla.prefill_capacity_rps(model, isl, self.last_obs.kv_hit_rate or 0.0, lim, self.cfg.ttft_ms)
        if role == "decode":
            dcap = sla.decode_capacity_rps(model, isl, osl or 1, lim, self.cfg.itl_ms, accept)
            cap = min(cap, dcap) if self.cfg.mode == "agg" else dcap
        self.metrics.capacity[role].set(cap)
        target = sla.replicas_for(demand, cap, current, self.cfg, role)
        return Decision(role, current, target, f"{head}, one engine {cap:.2f} req/s within the SLA")

    # ---- applying ------------------------------------------------------------------

    async def _state(self) -> dict[str, PoolState]:
        state = await self.connector.state()
        now = time.monotonic()
        hours = (now - self._last_gpu_tick) / 3600.0
        self._last_gpu_tick = now
        self.metrics.gpu_hours.inc(hours * gpus({r: s.ready for r, s in state.items()}, self.cfg))
        for role, pool in state.items():
            self.metrics.replicas[role].set(pool.desired)
            self.metrics.ready[role].set(pool.ready)
            if pool.ready >= pool.desired:
                self.pending_since.pop(role, None)
            else:
                self.pending_since.setdefault(role, now)
        await self._give_up_stuck(state, now)
        await self._watch_pools(state)
        return state

    async def _watch_pools(self, state: dict[str, PoolState]) -> None:
        ready = {role: state[role].ready for role in self.cfg.roles if role in state}
        silent = self.silent.due(ready, {role: len(self.collector.reporting(role)) for role in ready})
        if silent:
            self.silent.warn(silent, ready, len(self.collector.cards), await self.collector.namespaces_elsewhere())

    async def _give_up_stuck(self, state: dict[str, PoolState], now: float) -> None:
        limit = self.cfg.replica_ready_timeout_seconds
        for role, since in list(self.pending_since.items()):
            if now - since < limit:
                continue
            pool = state[role]
            back = max(pool.ready, 0)
            log.error("planner: %d %s replica(s) not ready after %.0fs: giving up, %s %d -> %d",
                      pool.desired - pool.ready, role, limit, role, pool.desired, back)
            self.metrics.start_timeouts.labels(role).inc()
            if not self.cfg.advisory:
                await self.connector.scale({role: back})
            state[role] = PoolState(back, pool.ready)
            self.pending_since.pop(role, None)

    async def _apply(self, loop: str, decisions: list[Decision], state: dict[str, PoolState]) -> None:
        targets = {d.role: d.target for d in decisions}
        fitted, note = fit_budget({r: targets.get(r, s.desired) for r, s in state.items()}, self.cfg)
        gauge = self.metrics.load_decision if loop == "load" else self.metrics.throughput_decision
        changes = {}
        for d in decisions:
            final = fitted[d.role]
            reason = d.reason + (f"; {note}" if note and final != d.target else "")
            verb = "advisory, not applied" if self.cfg.advisory and final != d.current else "applied"
            log.info("planner decision [%s] %s %d -> %d (%s): %s", loop, d.role, d.current, final,
                     verb if final != d.current else "hold", reason)
            self.decisions.append(Decision(d.role, d.current, final, reason))
            gauge.labels(d.role).set(final - d.current)
            if final != d.current:
                changes[d.role] = final
        if changes and not self.cfg.advisory:
            await self.connector.scale(changes)

    def _seed_once(self) -> None:
        """Seed each role's perf model from the profile once, when it appears: the decode pool may be
        discovered ticks after the prefill pool, and must not miss its points."""
        new = {role: m for role, m in self.collector.models.items() if role not in self._seeded}
        if self.profile is None or not new:
            return
        seed_profile(new, *self.profile)
        self._seeded.update(new)

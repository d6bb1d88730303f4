"""The planner's load tick decides only on FPMs that cover each pool (Dynamo 1.6.1: the tick is skipped
with `worker_count_mismatch` when the FPM worker count differs from the ready replicas). The audit's
case: decode scaled 1 -> 2, and 2 -> 3 two seconds later on the first engine's FPM alone, while the new
replica was ready but had not reported. A real `Planner` and `FpmCollector`, fed FPMs directly; the
connector is a stand-in that records what it is asked."""

from __future__ import annotations

import logging

from dynamo.llm.forward_pass import ForwardPassMetrics, ScheduledRequests
from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import Connector, PoolState
from dynamo.planner.observe import Engine, FpmCollector
from dynamo.planner.planner import Planner
from tests.planner.test_load_scaling import LIM

BUSY = 6000  # decode KV tokens: 0.6 of LIM's 10,000, over target `latency`'s 0.4


class Pools(Connector):
    name = "stand-in"

    def __init__(self, cfg: PlannerConfig, pools: dict[str, PoolState]) -> None:
        super().__init__(cfg)
        self.pools = pools
        self.asked: list[dict[str, int]] = []

    async def state(self) -> dict[str, PoolState]:
        return {role: PoolState(p.desired, p.ready) for role, p in self.pools.items()}

    async def scale(self, targets: dict[str, int]) -> None:
        self.asked.append(dict(targets))
        for role, n in targets.items():
            self.pools[role].desired = n


class Fed(FpmCollector):
    """Cards set by the test instead of read from discovery."""

    async def refresh(self) -> None:
        pass

    def card(self, instance_id: int, role: str) -> None:
        self.cards[instance_id] = Engine(role, f"Mocker{role.title()}Worker", LIM, "m")

    def report(self, instance_id: int, decode_kv: int = 0, dp_rank: int = 0) -> None:
        self.observe(instance_id, ForwardPassMetrics(
            worker_id=str(instance_id), dp_rank=dp_rank, wall_time=0.01,
            scheduled_requests=ScheduledRequests(num_decode_requests=1 if decode_kv else 0,
                                                 sum_decode_kv_tokens=decode_kv)))


def planner(pools: dict[str, PoolState], mode: str = "disagg") -> tuple[Planner, Pools, Fed]:
    cfg = PlannerConfig(environment="virtual", model_name="m", namespace="ns", mode=mode, optimization_target="latency",
                        max_gpu_budget=16)
    conn, collector = Pools(cfg, pools), Fed(None, cfg)
    return Planner(cfg, conn, collector), conn, collector


def last(p: Planner, role: str):
    return [d for d in p.decisions if d.role == role][-1]


async def test_a_ready_replica_without_fpms_holds_the_pool(caplog):
    p, conn, fpms = planner({"prefill": PoolState(1, 1), "decode": PoolState(2, 2)})
    fpms.card(1, "prefill")
    fpms.report(1)
    for iid in (2, 3):
        fpms.card(iid, "decode")
    fpms.report(2, decode_kv=BUSY)  # replica 3 is ready and in discovery, but silent so far
    caplog.set_level(logging.INFO, "dynamo.planner")
    await p.load_tick()
    d = last(p, "decode")
    assert (d.current, d.target) == (2, 2) and d.reason.startswith("worker_count_mismatch: decode: 2 ready")
    assert conn.asked == []
    assert "worker count mismatch for decode: 2 ready replica(s), FPMs from 1 worker(s)" in caplog.text
    assert p.metrics.load_skipped.labels("decode", "worker_count_mismatch")._value.get() == 1

    fpms.report(3, decode_kv=BUSY)  # both engines report: the pool's load decides again
    await p.load_tick()
    assert (last(p, "decode").current, last(p, "decode").target) == (2, 3)
    assert conn.asked == [{"decode": 3}]


async def test_disagg_holds_both_pools_when_one_is_not_covered():
    p, conn, fpms = planner({"prefill": PoolState(2, 2), "decode": PoolState(1, 1)})
    fpms.card(1, "prefill")
    fpms.card(2, "prefill")
    fpms.report(1)  # prefill's second replica has not reported
    fpms.card(3, "decode")
    fpms.report(3, decode_kv=BUSY)
    await p.load_tick()
    d = last(p, "decode")
    assert d.target == 1 and "prefill: 2 ready replica(s), FPMs from 1 worker(s) (disagg: both pools hold)" in d.reason
    assert last(p, "prefill").target == 2 and conn.asked == []


async def test_engines_of_a_removed_worker_and_missing_dp_ranks_hold_agg():
    p, conn, fpms = planner({"decode": PoolState(1, 1)}, mode="agg")
    for iid in (1, 2):
        fpms.card(iid, "decode")
        fpms.report(iid, decode_kv=BUSY)  # worker 2 left the pool but is still in discovery
    await p.load_tick()
    assert last(p, "decode").target == 1 and "FPMs from 2 worker(s)" in last(p, "decode").reason

    p, conn, fpms = planner({"decode": PoolState(2, 2)}, mode="agg")
    for iid in (1, 2):
        fpms.card(iid, "decode")
        fpms.report(iid, decode_kv=BUSY)
    fpms.report(1, decode_kv=BUSY, dp_rank=1)  # worker 2's rank 1 is silent
    await p.load_tick()
    assert last(p, "decode").target == 2 and "different dp ranks" in last(p, "decode").reason
    fpms.report(2, decode_kv=BUSY, dp_rank=1)
    await p.load_tick()
    assert conn.asked == [{"decode": 3}]

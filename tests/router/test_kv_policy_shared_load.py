"""One engine in several pools (router/kv_policy.py, router/active_sequences.py's LoadLedger): the frontend
builds a pool per model name, so a worker serving a base model and its LoRA adapters is in each of their pools.
Each pool's KV router must count the load the others booked on that worker, for its cost and for busy
detection, and a release there wakes every pool's queue."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dynamo.llm.model_card import ModelDeploymentCard, RuntimeConfig
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import Role, WorkerInfo, WorkerPool
from dynamo.router.replica_sync import ActiveSequenceEvent, ReplicaSync
from dynamo.router.selector import BusyThresholds
from dynamo.runtime.records import EndpointId

EID = EndpointId("ns", "backend", "generate")


def card(model: str, lora: str | None) -> ModelDeploymentCard:  # 64 KV blocks of 4 tokens per worker
    return ModelDeploymentCard(display_name=model, slug=model, model_path="/m", context_length=4096,
                               kv_cache_block_size=4, runtime_config=RuntimeConfig(total_kv_blocks=64), lora_name=lora)


def pool(model: str, lora: str | None = None, workers=(1, 2), version: int = 1) -> WorkerPool:
    return WorkerPool(model, Role.DECODE, version, 4,
                      tuple(WorkerInfo(i, EID, card(model, lora), f"a{i}") for i in workers), lora_name=lora)


def request(rid: str, model: str, lora: str | None = None, pin: int | None = None) -> PreprocessedRequest:
    return PreprocessedRequest(request_id=rid, model=model, token_ids=[hash((rid, i)) % 1000 for i in range(40)],
                               lora_name=lora, routing=RoutingHints(backend_instance_id=pin) if pin else None,
                               stop_conditions=StopConditions(max_tokens=8))


def policy() -> KvPolicy:
    return KvPolicy(KvRouterConfig(use_kv_events=False))


def test_base_requests_avoid_the_worker_busy_with_adapter_requests():
    async def run():
        pol, base, adapter = policy(), pool("base"), pool("adapterA", "adapterA")
        for i in range(6):
            await pol.select(adapter, request(f"a{i}", "adapterA", "adapterA", pin=1), set())
        return [(await pol.select(base, request(f"b{i}", "base"), set())).worker.instance_id for i in range(4)]
    assert asyncio.run(run()) == [2, 2, 2, 2]  # each pool on its own split them 1, 2, 1, 2


def test_a_worker_busy_with_one_pools_requests_is_busy_for_the_other():
    async def run():
        pol, base, adapter = policy(), pool("base"), pool("adapterA", "adapterA")
        await pol.select(base, request("warm", "base"), set())
        pol.free("warm")
        for i in range(8):  # 8 x 10 blocks on worker 1, of its 64
            await pol.select(adapter, request(f"x{i}", "adapterA", "adapterA", pin=1), set())
        for model in ("base", "adapterA"):
            pol.set_busy_thresholds(model, BusyThresholds(active_decode_blocks=0.5))
        busy = pol.busy(adapter, 1), pol.busy(base, 1)
        for i in range(8):
            pol.free(f"x{i}")
        return busy, pol.busy(base, 1)
    assert asyncio.run(run()) == ((True, True), False)


def test_an_adapter_reloaded_at_once_still_sees_its_requests_running():
    async def run():
        pol = policy()
        await pol.select(pool("adapterA", "adapterA"), request("a0", "adapterA", "adapterA", pin=1), set())
        pol.on_membership_change(pool("adapterA", "adapterA", workers=(), version=2))  # unloaded: its route goes
        reloaded = pool("adapterA", "adapterA", version=3)
        gone = "adapterA" not in pol.routes
        pick = (await pol.select(reloaded, request("r", "adapterA", "adapterA"), set())).worker.instance_id
        pol.free("a0")  # the request booked before the unload ends: its load goes, wherever it is counted
        return gone, pick, pol.ledger.loads[(1, 0)].requests
    assert asyncio.run(run()) == (True, 2, 0)


def test_a_release_in_one_pool_wakes_a_request_queued_in_another():
    async def run():
        pol, base, adapter = policy(), pool("base", workers=(1,)), pool("adapterA", "adapterA", workers=(1,))
        await pol.select(base, request("warm", "base"), set())
        pol.free("warm")
        for model in ("base", "adapterA"):
            pol.set_busy_thresholds(model, BusyThresholds(active_decode_blocks=0.1))  # 6 of 64 blocks
        await pol.select(adapter, request("x", "adapterA", "adapterA"), set())
        waiter = asyncio.ensure_future(pol.select(base, request("b", "base"), set()))
        await asyncio.sleep(0.05)
        queued = not waiter.done()
        pol.free("x")
        for _ in range(20):  # a few turns of the loop: woken at the release, not at the 0.1 s recheck
            await asyncio.sleep(0)
        return queued, waiter.done() and waiter.result().worker.instance_id
    assert asyncio.run(run()) == (True, 1)


@pytest.mark.parametrize("replaced_by", ["unload", "rebuild"])
def test_a_peer_replicas_booking_is_freed_after_its_pools_route_was_replaced(replaced_by, monkeypatch):
    """`--router-replica-sync`: a peer's booking taken into an adapter's route must leave the worker's shared load
    at the peer's free, at its expiry, after that route was retired (adapter unloaded) or rebuilt (block size)."""
    pol = policy()
    sync = ReplicaSync(None, None, "me", 7, pol._router_for)
    base, adapter = pool("base"), pool("adapterA", "adapterA")
    pol.on_membership_change(base)
    pol.on_membership_change(adapter)
    sync.apply(ActiveSequenceEvent(router_id="peer", model="adapterA", request_id="p", kind="add", worker_id=1,
                                   seq_hashes=[11, 12, 13, 14], isl=16))
    booked = pol.routes["base"].router.active.loads()[(1, 0)]["requests"]
    if replaced_by == "unload":
        pol.on_membership_change(pool("adapterA", "adapterA", workers=(), version=2))
    else:
        pol.on_membership_change(dataclasses.replace(adapter, block_size=8, version=2))
    sync.apply(ActiveSequenceEvent(router_id="peer", model="adapterA", request_id="p", kind="free"))
    assert (booked, pol.routes["base"].router.active.loads()[(1, 0)]["requests"], pol.ledger.loads[(1, 0)].members) \
        == (1, 0, {})


def test_a_block_size_rebuild_frees_what_it_drops_here_and_on_the_peers():
    from tests.router.test_replica_sync import _Wire

    async def run():
        ours, theirs = policy(), policy()
        ours.sync, theirs.sync = _Wire("A", ours._router_for), _Wire("B", theirs._router_for)
        base, adapter = pool("base"), pool("adapterA", "adapterA")
        for pol in (ours, theirs):
            pol.on_membership_change(base)
            pol.on_membership_change(adapter)
        await ours.select(adapter, request("a0", "adapterA", "adapterA", pin=1), set())
        ours.sync.deliver_to(theirs.sync)
        booked = theirs.routes["base"].router.active.requests((1, 0))
        ours.on_membership_change(dataclasses.replace(adapter, block_size=8, version=2))
        ours.sync.deliver_to(theirs.sync)
        ours.free("a0")  # its real end: nothing left to free or tell
        left = [pol.routes["base"].router.active.requests((1, 0)) for pol in (ours, theirs)]
        for pol in (ours, theirs):
            await pol.close()
        return booked, left
    assert asyncio.run(run()) == (1, [0, 0])

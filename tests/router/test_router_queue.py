"""The router queue: bounded in number and time, ordered by strict tier then the policy's score
(fcfs / wspt / lcfs, with priority jumps), per pool, and fed by `--router-queue-threshold`'s
prefill saturation. Driven through the kv policy as the frontend drives it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dynamo.llm.protocol import BACKGROUND_TIER, PreprocessedRequest, RoutingHints
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import AllWorkersBusy, NoWorkers, WorkerPool
from dynamo.router.router_queue import RouterQueue
from tests.router.test_policy import pool


def distinct(n: int, base: int) -> list[int]:
    """A prompt sharing no block with any other (shared in-flight blocks would not count as load)."""
    return list(range(base, base + n))


def req(rid: str, tokens: list[int], priority: float | None = None, strict: int | None = None,
        model: str = "m", sensitivity: float | None = None) -> PreprocessedRequest:
    hints = (RoutingHints(priority=priority, strict_priority=strict, latency_sensitivity=sensitivity)
             if priority or strict or sensitivity is not None else None)
    return PreprocessedRequest(request_id=rid, model=model, token_ids=tokens, routing=hints)


def busy_policy(**kw) -> KvPolicy:
    """One worker, busy while more than 10 prompt tokens await prefill."""
    config = dict(router_cost_model="dynamo", active_prefill_tokens_threshold=10, router_queue_timeout_secs=5.0)
    return KvPolicy(KvRouterConfig(**{**config, **kw}))


async def queue_up(policy: KvPolicy, p: WorkerPool, requests: list[PreprocessedRequest]) -> list[asyncio.Future]:
    """Start `requests` one after another (each enters the queue before the next)."""
    waiting = []
    for r in requests:
        waiting.append(asyncio.ensure_future(policy.select(p, r, set())))
        await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)
    return waiting


async def serve_in_order(policy: KvPolicy, waiting: list[asyncio.Future], first: str) -> list[str]:
    """Release the worker one request at a time; the order the waiters were served in."""
    order, names = [], {id(w): None for w in waiting}
    policy.prefill_complete(first)
    for _ in waiting:
        done, _ = await asyncio.wait([w for w in waiting if names[id(w)] is None], timeout=5,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1, "exactly one waiter is served per release"
        (task,) = done
        rid = next(rid for rid, inflight in policy._inflight.items() if rid not in order and rid != first)
        names[id(task)] = rid
        order.append(rid)
        policy.prefill_complete(rid)
    return order


async def test_waits_for_released_load_then_times_out():
    policy = busy_policy()
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())  # 32 prefill tokens > 10: worker busy
    waiting = asyncio.ensure_future(policy.select(p, req("next", list(range(8))), set()))
    await asyncio.sleep(0.3)
    queue = policy.routes["m"].queue
    assert not waiting.done() and queue.pending == 1
    policy.prefill_complete("big")  # load released: the waiter is served
    choice = await asyncio.wait_for(waiting, 5)
    assert choice.worker.instance_id == 1 and queue.stats()["queued_total"] == 1 and queue.pending == 0
    short = busy_policy(router_queue_timeout_secs=0.3)  # a request that never fits is answered AllWorkersBusy
    await short.select(p, req("big", list(range(32))), set())
    with pytest.raises(AllWorkersBusy):
        await asyncio.wait_for(short.select(p, req("late", [1, 2]), set()), 5)
    assert short.routes["m"].queue.stats()["timed_out"] == 1 and short.health()["router"]["queue"]["timed_out"] == 1


async def test_bounded_and_off():
    queue = RouterQueue(KvRouterConfig(router_queue_max_requests=1, router_queue_timeout_secs=5))
    first = asyncio.ensure_future(queue.wait(queue.enter()))
    await asyncio.sleep(0)
    with pytest.raises(AllWorkersBusy):
        queue.enter()  # the queue is full: refused at once
    queue.wake()
    await asyncio.wait_for(first, 1)
    with pytest.raises(AllWorkersBusy):
        RouterQueue(KvRouterConfig(router_queue_max_requests=0)).enter()


async def test_fcfs_serves_oldest_first_with_priority_jumps_and_strict_tiers():
    policy = busy_policy()
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())
    waiting = await queue_up(policy, p, [req("a", distinct(20, 100)), req("b", distinct(20, 200)),
                                         req("jump", distinct(20, 300), priority=60.0),
                                         req("tier", distinct(20, 400), strict=1)])
    assert await serve_in_order(policy, waiting, "big") == ["tier", "jump", "a", "b"]


async def test_background_work_waits_behind_every_client_request():
    """The Batch API's tier (BACKGROUND_TIER): even the oldest, with the largest jump, goes last."""
    policy = busy_policy()
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())
    waiting = await queue_up(policy, p, [req("batch", distinct(20, 100), priority=60.0, strict=BACKGROUND_TIER),
                                         req("batch-2", distinct(20, 200), strict=BACKGROUND_TIER),
                                         req("client", distinct(20, 300))])
    assert await serve_in_order(policy, waiting, "big") == ["client", "batch", "batch-2"]


async def test_latency_sensitivity_moves_a_request_ahead_in_place_of_its_priority():
    """Dynamo's queue hint: seconds ahead of its arrival; a request that gives it is placed by it,
    not by its (engine) priority."""
    policy = busy_policy()
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())
    waiting = await queue_up(policy, p, [req("a", distinct(20, 100)),
                                         req("engine-only", distinct(20, 200), priority=60.0, sensitivity=0.0),
                                         req("sensitive", distinct(20, 300), sensitivity=60.0)])
    assert await serve_in_order(policy, waiting, "big") == ["sensitive", "a", "engine-only"]


async def test_wspt_serves_least_new_prefill_first_and_lcfs_newest_first():
    policy = busy_policy(router_queue_policy="wspt")
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())
    waiting = await queue_up(policy, p, [req("long", distinct(40, 100)), req("short", distinct(12, 200)),
                                         req("mid", distinct(24, 300))])
    assert await serve_in_order(policy, waiting, "big") == ["short", "mid", "long"]
    lcfs = busy_policy(router_queue_policy="lcfs")
    await lcfs.select(p, req("big", list(range(32))), set())
    waiting = await queue_up(lcfs, p, [req("a", distinct(20, 100)), req("b", distinct(20, 200))])
    assert await serve_in_order(lcfs, waiting, "big") == ["b", "a"]


async def test_cancelled_waiter_leaves_and_the_next_is_served():
    policy = busy_policy()
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())
    gone, stays = await queue_up(policy, p, [req("gone", distinct(20, 100)), req("stays", distinct(20, 200))])
    gone.cancel()
    await asyncio.sleep(0.01)
    assert policy.routes["m"].queue.pending == 1
    policy.prefill_complete("big")
    assert (await asyncio.wait_for(stays, 5)).worker.instance_id == 1


async def test_one_models_queue_never_holds_up_another_model():
    policy = busy_policy()
    busy, free = pool(1), WorkerPool("other", pool(2).role, 1, 4, pool(2).workers)
    await policy.select(busy, req("big", list(range(32))), set())
    stuck = asyncio.ensure_future(policy.select(busy, req("wait", list(range(20))), set()))
    await asyncio.sleep(0.05)
    choice = await asyncio.wait_for(policy.select(free, req("o", [1, 2], model="other"), set()), 1)
    assert choice.worker.instance_id == 2 and not stuck.done()
    policy.prefill_complete("big")
    await asyncio.wait_for(stuck, 5)


async def test_queue_threshold_holds_requests_while_every_worker_is_saturated():
    """--router-queue-threshold 0.5 with max_num_batched_tokens 64: a worker with more than 32
    prompt tokens awaiting prefill is saturated; a request waits until one is not."""
    policy = KvPolicy(KvRouterConfig(router_queue_threshold=0.5, router_queue_timeout_secs=5.0))
    p = pool(1, 2)
    first = await policy.select(p, req("x", list(range(40))), set())
    second = await policy.select(p, req("y", list(range(100, 140))), set())
    assert {first.worker.instance_id, second.worker.instance_id} == {1, 2}  # the saturated one is left out
    waiting = asyncio.ensure_future(policy.select(p, req("z", list(range(200, 240))), set()))
    await asyncio.sleep(0.2)
    assert not waiting.done() and policy.routes["m"].queue.pending == 1
    policy.prefill_complete("y")
    assert (await asyncio.wait_for(waiting, 5)).worker.instance_id == second.worker.instance_id


def test_queue_threshold_needs_the_queue():
    with pytest.raises(ValueError, match="router-queue-max-requests"):
        KvRouterConfig(router_queue_threshold=0.5, router_queue_max_requests=0).validate()


def test_a_cancel_the_wait_swallowed_still_ends_the_wait():
    """Python 3.11's wait_for can swallow a cancel that lands as its wait times out: the task is still
    asked to stop (cancelling() > 0), so the wait ends with CancelledError instead of going on."""
    async def run() -> None:
        queue = RouterQueue(KvRouterConfig(router_queue_timeout_secs=2))  # without the check: busy at 2 s
        ticket = queue.enter()
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass  # swallowed, as wait_for may do: cancelling() stays 1
        with pytest.raises(asyncio.CancelledError):
            await queue.wait(ticket)  # in this task: wait_for would run it in another
        queue.leave(ticket)
        assert queue.pending == 0
    asyncio.run(run())


async def test_a_waiter_pinned_to_a_busy_worker_does_not_hold_up_one_another_worker_can_serve():
    """Backfill: the head of the queue is pinned to worker 1 (a gateway chose it), which stays busy; worker 2
    frees. The unpinned waiter behind the head goes to worker 2 at once instead of waiting out the head's
    deadline; the pinned head still waits for worker 1 and is served when it frees."""
    policy = busy_policy()
    p = pool(1, 2)
    await policy.select(p, req("big1", distinct(32, 0)), {2})  # 32 prefill tokens > 10: worker 1 busy
    await policy.select(p, req("big2", distinct(32, 100)), {1})  # worker 2 busy
    pinned = PreprocessedRequest(request_id="pinned", model="m", token_ids=distinct(20, 200),
                                 routing=RoutingHints(backend_instance_id=1))
    head, behind = await queue_up(policy, p, [pinned, req("free", distinct(20, 300))])
    policy.prefill_complete("big2")  # worker 2 has room; worker 1 is still busy
    assert (await asyncio.wait_for(behind, 2)).worker.instance_id == 2
    assert not head.done()
    policy.prefill_complete("big1")
    assert (await asyncio.wait_for(head, 2)).worker.instance_id == 1
    assert policy.routes["m"].queue.pending == 0


async def test_unconstrained_waiters_keep_their_order():
    """No backfill among waiters that may all go anywhere: the head finding every worker busy means the others
    would too, and the release serves them in their order."""
    policy = busy_policy()
    p = pool(1, 2)
    await policy.select(p, req("big1", distinct(32, 0)), {2})
    await policy.select(p, req("big2", distinct(32, 100)), {1})
    waiting = await queue_up(policy, p, [req("a", distinct(20, 200)), req("b", distinct(20, 300)),
                                         req("c", distinct(20, 400))])
    await asyncio.sleep(0.35)  # several rechecks: none of them lets a later waiter jump the head
    assert not any(w.done() for w in waiting)
    policy.prefill_complete("big1")
    done, _ = await asyncio.wait(waiting, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert done == {waiting[0]}


async def test_backfill_follows_a_worker_freed_by_its_own_load_report():
    """Worker 2 is freed by its load report (another frontend's requests ended), not by a release of load here:
    what the queue knew busy is trusted one recheck interval only, so the unpinned waiter still goes ahead of
    the head pinned to busy worker 1, instead of waiting out the head's deadline."""
    from dynamo.llm.kv_events.protocol import LoadMetrics

    policy = KvPolicy(KvRouterConfig(router_cost_model="dynamo", active_decode_blocks_threshold=0.9,
                                     router_queue_timeout_secs=5.0, use_kv_events=False))
    p = pool(1, 2)
    policy.on_membership_change(p)
    router = policy.routes["m"].router
    for worker in (1, 2):
        router.update_metrics(LoadMetrics(worker_id=worker, kv_active_blocks=95, kv_total_blocks=100))
    pinned = PreprocessedRequest(request_id="pinned", model="m", token_ids=distinct(8, 0),
                                 routing=RoutingHints(backend_instance_id=1))
    head, behind = await queue_up(policy, p, [pinned, req("free", distinct(8, 100))])
    router.update_metrics(LoadMetrics(worker_id=2, kv_active_blocks=0, kv_total_blocks=100))
    assert (await asyncio.wait_for(behind, 2)).worker.instance_id == 2
    assert not head.done()
    head.cancel()
    with pytest.raises(asyncio.CancelledError):
        await head


async def test_an_adapter_unloaded_while_requests_wait_for_it_takes_its_route_and_ends_the_wait():
    policy = busy_policy()
    adapter = lambda *ids, version=1: dataclasses.replace(pool(*ids, version=version), model="ada",  # noqa: E731
                                                          lora_name="ada")
    await policy.select(adapter(1), req("big", distinct(32, 0), model="ada"), set())  # its worker busy
    [waiting] = await queue_up(policy, adapter(1), [req("next", distinct(20, 100), model="ada")])
    policy.on_membership_change(adapter(version=2))  # unloaded: its pool announced empty
    assert "ada" not in policy.routes
    with pytest.raises(NoWorkers):
        await asyncio.wait_for(waiting, 2)

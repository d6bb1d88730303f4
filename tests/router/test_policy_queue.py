"""What a `--router-policy-config` profile does to a pool's router queue, driven through the kv policy
as the frontend drives it: each model's pool takes its own profile (else the root one, else the
flags'), its default class's queue policy and prefill busy thresholds; requests are classified by
uncached prompt length; each class is held to its own thresholds and per-worker limits; waiting
classes are served by weighted deficit round robin."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from dynamo.router.config import KvMode, KvRouterConfig
from dynamo.router.indexer import KvIndexer
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import AllWorkersBusy, WorkerPool
from tests.router.test_policy import pool
from tests.router.test_router_queue import distinct, queue_up, req, serve_in_order

ROOT = """
default_policy_family: standard
uncached_isl_buckets:
  - {min_tokens: 0, bucket: all}
policy_classes:
  - {name: main, policy_family: standard, cache_bucket: all, queue_policy: wspt, quantum: 1,
     prefill_busy_threshold: 10, request_queue_limit_per_worker: 1}
models:
  other:
    default_policy_family: standard
    uncached_isl_buckets:
      - {min_tokens: 0, bucket: all}
    policy_classes:
      - {name: other-main, policy_family: standard, cache_bucket: all, quantum: 1, prefill_busy_threshold_frac: 0.5}
"""


def two_classes(short: str, long: str) -> str:
    """Requests with fewer than 16 uncached prompt tokens in class `short`, the others in `long`."""
    return textwrap.dedent(f"""
        default_policy_family: standard
        uncached_isl_buckets:
          - {{min_tokens: 0, bucket: small}}
          - {{min_tokens: 16, bucket: large}}
        policy_classes:
          - {{name: short, policy_family: standard, cache_bucket: small, {short}}}
          - {{name: long, policy_family: standard, cache_bucket: large, {long}}}
        """)


@pytest.fixture
def kv_policy(tmp_path):
    def kv_policy(document: str, **settings) -> KvPolicy:
        path = tmp_path / "policy.yaml"
        path.write_text(document)
        config = KvRouterConfig(router_policy_config=str(path), router_cost_model="dynamo",
                                router_queue_timeout_secs=5.0, **settings)
        config.validate()
        return KvPolicy(config)

    return kv_policy


def test_each_pool_takes_its_profiles_default_class(kv_policy):
    policy = kv_policy(ROOT, router_queue_threshold=0.1)  # the flag's class is replaced by the profiles
    policy.on_membership_change(pool(1))
    policy.on_membership_change(WorkerPool("other", pool(2).role, 1, 4, pool(2).workers))
    root, other = policy.routes["m"], policy.routes["other"]
    assert (root.queue.policy, root.router.thresholds.active_prefill_tokens,
            root.router.thresholds.active_prefill_tokens_frac) == ("wspt", 10, None)
    assert (other.queue.policy, other.router.thresholds.active_prefill_tokens,
            other.router.thresholds.active_prefill_tokens_frac) == ("fcfs", None, 0.5)
    health = policy.health()["router"]
    queue = health["models"]["m"]["queue"]
    assert (queue["policy"], queue["profile"], health["queue"]["policy"]) == ("wspt", "root", "wspt")
    assert queue["classes"][0]["name"] == "main" and queue["classes"][0]["prefill_busy_threshold"] == 10
    assert health["models"]["other"]["queue"]["profile"] == "models.other"


def test_without_a_profile_the_flags_make_the_one_class():
    policy = KvPolicy(KvRouterConfig(router_queue_threshold=0.1, router_queue_policy="lcfs"))
    policy.on_membership_change(pool(1))
    route = policy.routes["m"]
    assert (route.queue.policy, route.router.thresholds.active_prefill_tokens_frac) == ("lcfs", 0.1)
    assert route.queue.stats()["profile"] == "flags"


async def test_the_class_limit_per_worker_refuses_at_once(kv_policy):
    policy = kv_policy(ROOT)
    p = pool(1)
    await policy.select(p, req("big", list(range(32))), set())  # 32 prefill tokens > 10: busy
    waiting = asyncio.ensure_future(policy.select(p, req("first", distinct(8, 100)), set()))
    await asyncio.sleep(0.05)
    with pytest.raises(AllWorkersBusy, match="router policy class 'main' queue requests limit reached"):
        await policy.select(p, req("second", distinct(8, 200)), set())  # 1 per worker, 1 worker
    assert policy.health()["router"]["queue"]["rejected_class_limit"] == 1
    policy.prefill_complete("big")
    await asyncio.wait_for(waiting, 5)


async def test_each_class_is_held_to_its_own_busy_thresholds(kv_policy):
    policy = kv_policy(two_classes("quantum: 1, prefill_busy_threshold: 1000", "quantum: 1, prefill_busy_threshold: 10"))
    p = pool(1)
    await policy.select(p, req("big", distinct(32, 500)), set())
    long = asyncio.ensure_future(policy.select(p, req("long", distinct(24, 100)), set()))
    await asyncio.sleep(0.05)
    assert not long.done()  # 32 tokens await prefill: over the long class's 10
    await asyncio.wait_for(policy.select(p, req("short", distinct(8, 200)), set()), 1)  # under the short one's 1000
    policy.prefill_complete("big")
    policy.prefill_complete("short")
    await asyncio.wait_for(long, 5)


async def test_waiting_classes_are_served_by_deficit_round_robin(kv_policy):
    """Short prompts (8 tokens) earn 16 tokens of credit per round, long ones (24) 8: three shorts go
    before the first long although it came first (one class, fcfs, would serve L1 S1 L2 S2 S3)."""
    policy = kv_policy(two_classes("quantum: 16, prefill_busy_threshold: 0", "quantum: 8, prefill_busy_threshold: 0"))
    p = pool(1)
    await policy.select(p, req("big", distinct(32, 500)), set())
    waiting = await queue_up(policy, p, [req("L1", distinct(24, 100)), req("S1", distinct(8, 200)),
                                         req("L2", distinct(24, 300)), req("S2", distinct(8, 400)),
                                         req("S3", distinct(8, 600))])
    classes = {c["name"]: c["pending"] for c in policy.routes["m"].queue.stats()["classes"]}
    assert classes == {"short": 3, "long": 2}
    assert await serve_in_order(policy, waiting, "big") == ["S1", "S2", "S3", "L1", "L2"]


async def test_a_queued_request_is_judged_by_the_thresholds_in_force_now(kv_policy):
    """An operator relaxing the model's thresholds at runtime (POST /busy_threshold) places requests already
    waiting at once, not only newcomers: a waiter's class limits are recomputed at each retry."""
    from dynamo.router.selector import BusyThresholds
    policy = kv_policy(two_classes("quantum: 1, prefill_busy_threshold: 1000", "quantum: 1, prefill_busy_threshold: 500"),
                       active_prefill_tokens_threshold=10)
    p = pool(1)
    await policy.select(p, req("big", distinct(32, 500)), set())
    long = asyncio.ensure_future(policy.select(p, req("long", distinct(24, 100)), set()))
    await asyncio.sleep(0.05)
    assert not long.done()  # 32 tokens await prefill: over the model's 10
    policy.set_busy_thresholds("m", BusyThresholds(active_prefill_tokens=1000))
    await asyncio.wait_for(long, 1)  # now within the long class's 500


class CountingIndexer(KvIndexer):
    """The real indexer, counting its prefix lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def find_matches(self, local_hashes, early_exit: bool = False):
        self.lookups += 1
        return super().find_matches(local_hashes, early_exit)


def counted(policy: KvPolicy, p: WorkerPool) -> CountingIndexer:
    policy.on_membership_change(p)
    router = policy.routes["m"].router
    assert router.mode == KvMode.KV_EVENTS
    router.indexer = CountingIndexer()
    return router.indexer


async def test_classifying_a_request_and_selecting_its_worker_share_one_prefix_lookup(kv_policy):
    """Classes with their own thresholds classify a request by its uncached prompt before placing it:
    the selection reuses that lookup instead of scoring the prefix again."""
    policy = kv_policy(two_classes("quantum: 1, prefill_busy_threshold: 1000", "quantum: 1, prefill_busy_threshold: 10"))
    p = pool(1, 2)
    indexer = counted(policy, p)
    assert policy.routes["m"].queue.profile.thresholds_vary
    await policy.select(p, req("a", distinct(24, 100)), set())
    assert indexer.lookups == 1
    policy.free("a")


async def test_a_waiting_request_looks_its_prefix_up_once_per_try(kv_policy):
    """wspt orders waiters by uncached prompt: the first try's lookup prices its place in the queue too;
    once it has waited, the caches may have moved on, so its next try looks again (once)."""
    policy = kv_policy(ROOT)  # one class (wspt, prefill busy over 10 tokens)
    p = pool(1)
    indexer = counted(policy, p)
    assert policy.routes["m"].queue.profile.needs_uncached and not policy.routes["m"].queue.profile.thresholds_vary
    await policy.select(p, req("big", distinct(32, 500)), set())
    assert indexer.lookups == 1
    waiting = asyncio.ensure_future(policy.select(p, req("next", distinct(8, 100)), set()))
    await asyncio.sleep(0.05)
    assert not waiting.done() and indexer.lookups == 2  # busy: queued, priced by its own lookup
    policy.prefill_complete("big")
    await asyncio.wait_for(waiting, 5)
    assert indexer.lookups == 3

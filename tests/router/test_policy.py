"""Routing policies over worker pools: the registry, the load-blind policies, the kv policy's
lifecycle (select books, first token releases prefill, free releases all), the one mode
report (the router queue: test_router_queue.py)."""

from __future__ import annotations

import dataclasses

import pytest

from dynamo.llm.model_card import ModelDeploymentCard, RuntimeConfig
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions
from dynamo.router.config import KvMode, KvRouterConfig
from dynamo.router.kv_policy import KvPolicy, mode_report
from dynamo.router.policy import (Choice, NoWorkers, RandomPolicy, Role, RoundRobinPolicy, candidates, pinned_worker,
                                  WorkerInfo, WorkerPool, create_policy, policy_names, with_dp_rank)
from dynamo.runtime.records import EndpointId

EID = EndpointId("ns", "backend", "generate")
BS = 4


def card(publishes: bool = True, blocks: int = 64) -> ModelDeploymentCard:
    rc = RuntimeConfig(total_kv_blocks=blocks, publishes_kv_events=publishes, max_num_batched_tokens=64)
    return ModelDeploymentCard(display_name="m", slug="m", model_path="/m", context_length=4096,
                               kv_cache_block_size=BS, runtime_config=rc)


def pool(*ids: int, version: int = 1, role: Role = Role.DECODE, publishes: bool = True, blocks: int = 64):
    workers = tuple(WorkerInfo(i, EID, card(publishes, blocks), f"127.0.0.1:{1000 + i}") for i in ids)
    return WorkerPool("m", role, version, BS, workers)


def req(rid: str, tokens: list[int], pinned: int | None = None) -> PreprocessedRequest:
    hints = RoutingHints(backend_instance_id=pinned) if pinned is not None else None
    return PreprocessedRequest(request_id=rid, model="m", token_ids=tokens, routing=hints)


def test_registry_names_and_unknown():
    assert {"kv", "round-robin", "random"} <= set(policy_names())
    assert isinstance(create_policy("round-robin", KvRouterConfig()), RoundRobinPolicy)
    assert isinstance(create_policy("kv", KvRouterConfig()), KvPolicy)
    with pytest.raises(ValueError, match="unknown routing policy"):
        create_policy("nope", KvRouterConfig())


def test_pool_names_roles_and_lookup():
    p = pool(3, 1)
    assert p.name == "m" and len(p) == 2 and p.get(3).address == "127.0.0.1:1003" and p.get(9) is None
    assert pool(1, role=Role.PREFILL).name == "m/prefill"


async def test_round_robin_and_random_respect_exclude_and_pin():
    rr = RoundRobinPolicy()
    p = pool(2, 1)
    picks = [(await rr.select(p, req(str(i), [1]), set())).worker.instance_id for i in range(4)]
    assert picks == [1, 2, 1, 2]
    assert (await rr.select(p, req("x", [1]), {1})).worker.instance_id == 2
    assert (await rr.select(p, req("y", [1], pinned=2), set())).worker.instance_id == 2
    with pytest.raises(NoWorkers):
        await rr.select(p, req("z", [1]), {1, 2})
    rnd = RandomPolicy()
    assert {(await rnd.select(p, req(str(i), [1]), {2})).worker.instance_id for i in range(5)} == {1}
    with pytest.raises(NoWorkers):
        await rnd.select(pool(), req("z", [1]), set())


async def test_round_robin_turns_per_pool():
    """A disaggregated request books its prefill pool then its decode pool, and a frontend serves several
    models: each pool keeps its own turn (a shared one sent every sequential prefill to the same worker)."""
    rr = RoundRobinPolicy()
    prefill, decode, other = pool(1, 2, role=Role.PREFILL), pool(3, 4), dataclasses.replace(pool(5, 6), model="o")
    picks = []
    for i in range(4):
        picks.append((await rr.select(prefill, req(f"p{i}", [1]), set())).worker.instance_id)
        picks.append((await rr.select(decode, req(f"d{i}", [1]), set())).worker.instance_id)
        picks.append((await rr.select(other, req(f"o{i}", [1]), set())).worker.instance_id)
    assert picks == [1, 3, 5, 2, 4, 6] * 2


def test_mode_report_is_one_rule_for_every_host():
    assert mode_report(KvMode.KV_EVENTS, pool(1, 2).workers).mode == "kv-events"
    silent = mode_report(KvMode.KV_EVENTS, pool(1, 2, publishes=False).workers)
    assert silent.mode == "approximate" and silent.degraded
    mixed = pool(1, publishes=False).workers + pool(2).workers
    partial = mode_report(KvMode.KV_EVENTS, mixed)
    assert partial.mode == "kv-events" and partial.degraded and partial.reason.startswith("only 1 of 2")
    cardless = (WorkerInfo(7, EID, None, "127.0.0.1:1"),)  # the router service's non-LLM workers
    assert mode_report(KvMode.KV_EVENTS, cardless).mode == "kv-events"
    assert mode_report(KvMode.LOAD_ONLY, pool(1).workers).mode == "load-only"
    assert mode_report(KvMode.APPROXIMATE, pool(1).workers).mode == "approximate"
    down = mode_report(KvMode.KV_EVENTS, pool(1, 2).workers, event_plane_down=True)
    assert down.mode == "approximate" and down.degraded and "event plane unreachable" in down.reason


async def test_kv_policy_books_releases_and_follows_membership():
    policy = KvPolicy(KvRouterConfig(router_cost_model="dynamo"))
    p = pool(1, 2)
    tokens = list(range(16))
    first = await policy.select(p, req("a", tokens), set())
    assert isinstance(first, Choice) and first.worker.instance_id in (1, 2)
    router = policy.routes["m"].router
    key = (first.worker.instance_id, 0)
    assert router.active.active_prefill_tokens(key) == 16 and router.active.requests(key) == 1
    policy.prefill_complete("a")
    assert router.active.active_prefill_tokens(key) == 0 and router.active.requests(key) == 1
    policy.free("a")
    policy.free("a")  # idempotent
    assert router.active.requests(key) == 0
    # a new snapshot without worker 1 drops it as a candidate; "b", still running there, stays booked
    # until it ends, and counts again if worker 1 rejoins first
    await policy.select(p, req("b", tokens, pinned=1), set())
    policy.on_membership_change(pool(2, version=2))
    assert sorted(router.workers()) == [2] and "b" in policy._inflight
    policy.on_membership_change(pool(1, 2, version=3))
    assert router.active.requests((1, 0)) == 1
    policy.on_membership_change(pool(2, version=4))
    policy.free("b")
    assert "b" not in policy._inflight and router.active.requests((1, 0)) == 0
    assert (await policy.select(pool(2, version=2), req("c", tokens), set())).worker.instance_id == 2
    with pytest.raises(NoWorkers):
        await policy.select(pool(2, version=2), req("d", tokens), {2})
    health = policy.health()["router"]
    assert health["models"]["m"]["workers"] == [2] and health["models"]["m"]["mode"] == "kv-events"


async def test_a_new_block_size_rebuilds_the_pools_routing_state():
    """A standalone router starts at 128 and adopts the first model card's block size: the pool keeps its
    workers, the old bookings go (their hashes match nothing now), and prefixes hash at the new size."""
    policy = KvPolicy(KvRouterConfig(router_cost_model="dynamo"))
    start = dataclasses.replace(pool(1, 2), block_size=128)
    await policy.select(start, req("a", list(range(16))), set())
    policy.on_membership_change(pool(1, 2, version=2))
    router = policy.routes["m"].router
    assert router.block_size == BS and sorted(router.workers()) == [1, 2] and "a" not in policy._inflight
    assert sum(router.active.requests((w, 0)) for w in (1, 2)) == 0
    chosen = await policy.select(pool(1, 2, version=2), req("b", list(range(16))), set())
    assert router.active.active_prefill_tokens((chosen.worker.instance_id, 0)) == 16


@pytest.mark.parametrize("max_tokens, osl, answer_blocks", [
    (400, None, 100),  # max_tokens alone: 400 tokens of blocks of 4
    (400, 40, 10),  # the client's estimate (nvext.agent_hints.osl) within max_tokens
    (40, 400, 10),  # never past max_tokens
    (None, 40, 10),  # an estimate without max_tokens
    (None, None, 0),  # neither: nothing assumed
])
async def test_kv_policy_books_the_answers_expected_length(max_tokens, osl, answer_blocks):
    policy = KvPolicy(KvRouterConfig())
    tokens = list(range(16))  # 4 prompt blocks
    request = PreprocessedRequest(request_id="a", model="m", token_ids=tokens,
                                  stop_conditions=StopConditions(max_tokens=max_tokens),
                                  routing=RoutingHints(osl=osl) if osl is not None else None)
    choice = await policy.select(pool(1), request, set())
    router = policy.routes["m"].router
    assert router.active.active_blocks((choice.worker.instance_id, 0)) == 4 + answer_blocks


async def test_kv_policy_one_instance_serves_decode_and_prefill_pools():
    policy = KvPolicy(KvRouterConfig())
    decode, prefill = pool(1, 2), pool(5, role=Role.PREFILL)
    assert (await policy.select(prefill, req("p", list(range(8))), set())).worker.instance_id == 5
    assert (await policy.select(decode, req("d", list(range(8))), set())).worker.instance_id in (1, 2)
    assert set(policy.routes) == {"m", "m/prefill"}


def test_with_dp_rank_sets_the_hint_without_touching_the_request():
    r = req("a", [1, 2])
    w = WorkerInfo(1, EID, None, "x")
    assert with_dp_rank(r, Choice(w)) is r
    sent = with_dp_rank(r, Choice(w, dp_rank=3))
    assert sent.routing.dp_rank == 3 and r.routing is None


async def test_lora_pool_hashes_in_the_adapter_namespace():
    from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes
    from dynamo.llm.kv_events.protocol import KvCacheEvent, KvStored, RouterEvent, StoredBlock

    tokens = list(range(32))
    policy = KvPolicy(KvRouterConfig(router_cost_model="dynamo"))
    lora = WorkerPool("m-lora", Role.DECODE, 1, BS, pool(1, 2).workers, lora_name="adapter")
    policy.on_membership_change(lora)
    router = policy.routes["m-lora"].router

    def stored(worker: int, lora_name: str | None, event_id: int) -> None:
        local = block_hashes(tokens, BS, lora_name)  # what the engine reports for the adapter's blocks
        blocks = [StoredBlock(block_hash=e, tokens_hash=h) for e, h in zip(sequence_hashes(local), local)]
        router.apply_event(RouterEvent(worker_id=worker, event=KvCacheEvent(
            event_id=event_id, data=KvStored(parent_hash=None, blocks=blocks))))

    stored(1, None, 0)  # base-model blocks of the same tokens on worker 1: no use to the adapter
    assert (await policy.select(lora, req("a", tokens), set())).overlap_blocks == 0
    policy.free("a")
    stored(2, "adapter", 0)  # the adapter's own blocks on worker 2
    choice = await policy.select(lora, req("b", tokens), set())
    assert (choice.worker.instance_id, choice.overlap_blocks) == (2, 8)


async def test_an_empty_pool_gets_no_router():
    policy = KvPolicy(KvRouterConfig())
    policy.on_membership_change(pool(role=Role.PREFILL))
    assert policy.routes == {}
    with pytest.raises(NoWorkers):
        await policy.select(pool(role=Role.PREFILL), req("a", [1, 2, 3]), set())


async def test_cached_tokens_is_the_chosen_workers_overlap_and_books_nothing():
    """What conditional disaggregation subtracts from the prompt: the prefix the worker `select`
    would pick already holds (approximate mode: remembered from its own decisions)."""
    policy = KvPolicy(KvRouterConfig(use_kv_events=False))
    p = pool(1, 2)
    prompt = list(range(100, 100 + 6 * BS))
    assert policy.cached_tokens(p, req("peek", prompt), set()) == 0  # nothing routed yet
    first = await policy.select(p, req("a", prompt), set())
    policy.free("a")
    longer = prompt + [7] * (BS + 2)
    assert policy.cached_tokens(p, req("peek", longer), set()) == 6 * BS
    assert policy.cached_tokens(p, req("peek", longer), {first.worker.instance_id}) == 0  # excluded holder
    assert policy.routes["m"].router.stats()["requests"] == 1  # peeking booked nothing
    assert RoundRobinPolicy().cached_tokens(p, req("peek", longer), set()) == 0


def test_pins_by_role():
    """A prefill pool is pinned by prefill_worker_id only; a decode pool by decode_worker_id,
    else backend_instance_id."""
    hints = RoutingHints(backend_instance_id=1, decode_worker_id=2, prefill_worker_id=5)
    r = PreprocessedRequest(request_id="p", model="m", token_ids=[1], routing=hints)
    assert pinned_worker(pool(1, 2), r) == ("decode_worker_id", 2)
    assert pinned_worker(pool(5, 6, role=Role.PREFILL), r) == ("prefill_worker_id", 5)
    assert [w.instance_id for w in candidates(pool(1, 2), r, set())] == [2]
    assert [w.instance_id for w in candidates(pool(5, 6, role=Role.PREFILL), r, set())] == [5]
    only_backend = PreprocessedRequest(request_id="q", model="m", token_ids=[1],
                                       routing=RoutingHints(backend_instance_id=1))
    assert pinned_worker(pool(5, role=Role.PREFILL), only_backend) is None
    assert [w.instance_id for w in candidates(pool(1, 2), only_backend, set())] == [1]


async def test_query_names_what_select_would_choose_and_books_nothing():
    """`query` (an inference gateway's query_instance_id): round-robin's turn does not pass, the kv
    router books no load, and a pin or exclusion counts as in `select`."""
    rr, p = RoundRobinPolicy(), pool(2, 1)
    assert [(await rr.query(p, req(str(i), [1]), set())).worker.instance_id for i in range(3)] == [1, 1, 1]
    assert (await rr.select(p, req("a", [1]), set())).worker.instance_id == 1
    assert (await rr.query(p, req("b", [1]), set())).worker.instance_id == 2  # the turn passed on select only
    assert (await rr.query(p, req("c", [1], pinned=1), set())).worker.instance_id == 1
    assert (await RandomPolicy().query(p, req("d", [1]), {1})).worker.instance_id == 2
    kv = KvPolicy(KvRouterConfig(use_kv_events=False))
    prompt = list(range(100, 100 + 6 * BS))
    holder = (await kv.select(p, req("e", prompt), set())).worker.instance_id
    kv.free("e")
    router = kv.routes["m"].router
    for i in range(5):  # booked, the queries would spread over both workers
        choice = await kv.query(p, req(f"q{i}", prompt + [i]), set())
        assert (choice.worker.instance_id, choice.overlap_blocks) == (holder, 6)
    assert router.stats()["requests"] == 1 and all(router.active.requests((w, 0)) == 0 for w in (1, 2))
    assert (await kv.query(p, req("f", prompt), {holder})).worker.instance_id == 3 - holder
    with pytest.raises(NoWorkers):
        await kv.query(p, req("g", prompt), {1, 2})


async def test_a_pool_that_empties_leaves_no_routing_state_behind():
    """A model gone (a LoRA adapter unloaded: its pool announced empty) takes its routing state with it, or every
    adapter ever loaded would keep a KV router, a queue and metric rows (kv), a turn (round-robin)."""
    kv = KvPolicy(KvRouterConfig())
    adapter = lambda *ids, version: dataclasses.replace(pool(*ids, version=version), model="ada",  # noqa: E731
                                                        lora_name="ada")
    kv.on_membership_change(adapter(1, 2, version=1))
    kv.on_membership_change(pool(1, 2))
    assert set(kv.routes) == {"ada", "m"}
    kv.on_membership_change(adapter(version=2))
    assert set(kv.routes) == {"m"}
    kv.on_membership_change(adapter(1, version=3))  # the adapter back: routed afresh
    assert (await kv.select(adapter(1, version=3), req("r", [1, 2, 3, 4]), set())).worker.instance_id == 1
    kv.on_membership_change(pool(version=4))  # a base model's pool (a router service's) keeps its queue meanwhile
    assert set(kv.routes) == {"ada", "m"}
    rr = RoundRobinPolicy()
    await rr.select(pool(1, 2), req("a", [1]), set())
    rr.on_membership_change(pool(version=2))
    assert rr._turns == {}

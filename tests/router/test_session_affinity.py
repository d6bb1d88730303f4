"""Session affinity around the real routing policies: a session's requests stay on the worker its
first one went to (per pool), bindings outlive their requests by the TTL, leave with their
worker or on its failure, close after a final request; hard mode waits for a busy bound worker,
soft mode moves; a subagent starts with its parent."""

from __future__ import annotations

import asyncio


from dynamo.llm.protocol import PreprocessedRequest, RoutingHints
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policy import RoundRobinPolicy, Role, WorkerInfo, WorkerPool
from dynamo.router.session_affinity import AffinityTable, SessionAffinityPolicy, with_session_affinity
from tests.router.test_policy import EID, card, pool

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def req(rid: str, session: str | None = None, tokens: list[int] | None = None, **hints) -> PreprocessedRequest:
    routing = RoutingHints(session_id=session, **hints) if session or hints else None
    return PreprocessedRequest(request_id=rid, model="m", token_ids=tokens or [1, 2, 3], routing=routing)


def affinity(inner=None, mode: str = "hard", clock: Clock | None = None, **kw) -> SessionAffinityPolicy:
    return SessionAffinityPolicy(inner or RoundRobinPolicy(), TTL, mode, clock or Clock(), **kw)


async def route(policy, p: WorkerPool, rid: str, session: str | None = None, exclude=(), free=True, **hints) -> int:
    choice = await policy.select(p, req(rid, session, **hints), set(exclude))
    if free:
        policy.free(rid)
    return choice.worker.instance_id


# -- the table --------------------------------------------------------------------------------
def test_a_binding_lives_while_leased_and_for_the_ttl_after():
    clock = Clock()
    table = AffinityTable(TTL, clock=clock)
    key = ("m", "s")
    table.acquire(key, 7, "r1", move=False, final=False)
    clock.now += 10 * TTL  # in flight: never expires
    assert table.lookup(key).worker == 7
    table.release("r1")
    table.release("r1")  # idempotent
    clock.now += TTL - 1
    assert table.lookup(key).worker == 7
    clock.now += 1
    assert table.lookup(key) is None and len(table) == 0


def test_the_first_live_binding_wins_unless_moved():
    table = AffinityTable(TTL, clock=Clock())
    key = ("m", "s")
    table.acquire(key, 1, "a", move=False, final=False)
    table.acquire(key, 2, "b", move=False, final=False)
    assert table.lookup(key).worker == 1 and table.lookup(key).leases == 2
    table.acquire(key, 2, "c", move=True, final=False)
    assert table.lookup(key).worker == 2 and table.lookup(key).leases == 3


def test_a_final_request_closes_the_binding_when_the_last_request_ends():
    table = AffinityTable(TTL, clock=Clock())
    key = ("m", "s")
    table.acquire(key, 1, "a", move=False, final=False)
    table.acquire(key, 1, "b", move=False, final=True)
    table.release("b")
    assert table.lookup(key) is not None  # "a" still runs
    table.release("a")
    assert table.lookup(key) is None


def test_a_lease_of_an_invalidated_binding_never_touches_its_successor():
    table = AffinityTable(TTL, clock=Clock())
    key = ("m", "s")
    table.acquire(key, 1, "old", move=False, final=False)
    table.invalidate(key)
    table.acquire(key, 2, "new", move=False, final=False)
    table.release("old")
    assert table.lookup(key).worker == 2 and table.lookup(key).leases == 1


def test_a_full_table_makes_room_from_expired_bindings_only():
    clock = Clock()
    table = AffinityTable(TTL, max_sessions=2, clock=clock)
    for i in range(2):
        table.acquire(("m", f"s{i}"), 1, f"r{i}", move=False, final=False)
    table.release("r0")
    table.acquire(("m", "s2"), 1, "r2", move=False, final=False)
    assert table.lookup(("m", "s2")) is None and table.full_refusals == 1  # s0 idle but not expired
    clock.now += TTL
    table.acquire(("m", "s3"), 1, "r3", move=False, final=False)
    assert table.lookup(("m", "s3")).worker == 1 and table.lookup(("m", "s0")) is None


def test_a_replicas_binding_is_taken_only_when_there_is_none_here():
    clock = Clock()
    table = AffinityTable(TTL, clock=clock)
    table.adopt(("m", "s"), 2)
    assert table.lookup(("m", "s")).worker == 2
    table.adopt(("m", "s"), 1)  # a conflicting live binding: the first one stays
    assert table.lookup(("m", "s")).worker == 2
    clock.now += TTL - 1
    table.adopt(("m", "s"), 2)  # the replica's request there ended: the idle TTL starts again
    clock.now += TTL - 1
    assert table.lookup(("m", "s")).worker == 2
    table.close(("m", "s"))
    assert table.lookup(("m", "s")) is None


def test_a_replicas_close_waits_for_the_requests_running_here():
    table = AffinityTable(TTL, clock=Clock())
    table.acquire(("m", "s"), 1, "r", move=False, final=False)
    table.close(("m", "s"))
    assert table.lookup(("m", "s")) is not None
    assert table.release("r")[1].closing and table.lookup(("m", "s")) is None


def test_drop_workers_forgets_only_that_pools_bindings_to_absent_workers():
    table = AffinityTable(TTL, clock=Clock())
    table.acquire(("m", "a"), 1, "r1", move=False, final=False)
    table.acquire(("m", "b"), 2, "r2", move=False, final=False)
    table.acquire(("m/prefill", "a"), 1, "r3", move=False, final=False)
    assert table.drop_workers("m", {2}) == 1
    assert table.lookup(("m", "a")) is None and table.lookup(("m/prefill", "a")).worker == 1


# -- around a policy --------------------------------------------------------------------------
async def test_a_session_stays_on_its_worker_while_others_round_robin():
    policy, p = affinity(), pool(1, 2)
    first = await route(policy, p, "a0", "s")
    picks = [await route(policy, p, f"a{i}", "s") for i in range(1, 5)]
    assert picks == [first] * 4
    others = [await route(policy, p, f"x{i}") for i in range(4)]
    assert sorted(others) == [1, 1, 2, 2]  # requests without a session are routed as before


async def test_without_a_ttl_only_sessions_whose_client_asks_are_kept():
    """No frontend TTL: a session header alone is passive metadata; nvext.session_control binds, for
    the timeout its open/bind sets (300 s by default), and its close ends the session."""
    assert isinstance(with_session_affinity(RoundRobinPolicy(), None, "hard"), SessionAffinityPolicy)
    clock = Clock()
    policy = SessionAffinityPolicy(RoundRobinPolicy(), None, "hard", clock)
    p = pool(1, 2)
    passive = [await route(policy, p, f"h{i}", "header-only") for i in range(4)]
    assert sorted(passive) == [1, 1, 2, 2]
    first = await route(policy, p, "c0", "agent", session_control=True)
    assert [await route(policy, p, f"c{i}", "agent", session_control=True) for i in range(1, 4)] == [first] * 3
    clock.now += 299
    assert await route(policy, p, "c4", "agent", session_control=True) == first
    clock.now += 300  # idle for the default timeout: the next request is routed afresh
    assert policy.table.lookup((p.name, "agent")) is None
    short = await route(policy, p, "b0", "short", session_control=True, session_ttl_secs=5.0)
    clock.now += 4
    assert await route(policy, p, "b1", "short", session_control=True) == short  # a turn without action keeps 5 s
    clock.now += 5
    assert policy.table.lookup((p.name, "short")) is None
    await route(policy, p, "z0", "closing", session_control=True, session_final=True)
    assert policy.table.lookup((p.name, "closing")) is None  # close: gone after its request
    assert len(policy.table) == 0


def test_a_client_timeout_replaces_the_bindings_own_and_travels_to_replicas():
    clock = Clock()
    table = AffinityTable(TTL, clock=clock)
    key = ("m", "s")
    assert table.acquire(key, 7, "r1", move=False, final=False, ttl=3600.0)  # new: told
    assert not table.acquire(key, 7, "r2", move=False, final=False)  # same binding, same timeout: nothing to tell
    assert table.acquire(key, 7, "r3", move=False, final=False, ttl=10.0)  # a new timeout is told
    for rid in ("r1", "r2", "r3"):
        table.release(rid)
    clock.now += 10
    assert table.lookup(key) is None
    replica = AffinityTable(None, clock=clock)
    replica.adopt(key, 9, 3600.0)
    replica.adopt(("m", "t"), 9)
    clock.now += 301
    assert replica.lookup(key).worker == 9 and replica.lookup(("m", "t")) is None  # 300 s without a timeout


async def test_an_expired_binding_is_routed_anew():
    clock = Clock()
    policy, p = affinity(clock=clock), pool(1, 2)
    first = await route(policy, p, "a", "s")
    clock.now += TTL
    await route(policy, p, "other")  # round-robin moves on
    assert await route(policy, p, "b", "s") == first  # rr's turn came back to the same worker...
    clock.now += TTL
    assert await route(policy, p, "c", "s") != first  # ...but this is a new binding, not the old one


async def test_a_failed_or_departed_worker_loses_its_sessions():
    policy, p = affinity(), pool(1, 2)
    first = await route(policy, p, "a", "s")
    other = 3 - first
    assert await route(policy, p, "b", "s", exclude={first}) == other  # unreachable or inhibited
    assert await route(policy, p, "c", "s") == other  # rebound: stays on the new worker
    policy.on_membership_change(pool(first, version=2))  # `other` left
    assert await route(policy, pool(first, version=2), "d", "s") == first
    assert policy.table.lost == 2


async def test_an_explicit_worker_wins_and_hard_mode_keeps_the_binding():
    policy, p = affinity(), pool(1, 2)
    first = await route(policy, p, "a", "s")
    assert await route(policy, p, "b", "s", backend_instance_id=3 - first) == 3 - first
    assert await route(policy, p, "c", "s") == first


async def test_decode_and_prefill_pools_bind_separately():
    policy = affinity()
    decode, prefill = pool(1, 2), pool(5, 6, role=Role.PREFILL)
    await route(policy, decode, "x")  # round-robin's counter is shared: offset the decode pool
    d = await route(policy, decode, "a", "s")
    f = await route(policy, prefill, "a:prefill", "s")
    assert d in (1, 2) and f in (5, 6)
    assert [await route(policy, decode, f"b{i}", "s") for i in range(2)] == [d, d]
    assert [await route(policy, prefill, f"c{i}:prefill", "s") for i in range(2)] == [f, f]


async def test_the_final_request_goes_to_the_binding_then_closes_it():
    policy, p = affinity(), pool(1, 2)
    first = await route(policy, p, "a", "s")
    assert await route(policy, p, "b", "s", session_final=True) == first
    assert len(policy.table) == 0


async def test_a_subagent_starts_where_its_parent_is():
    policy, p = affinity(), pool(1, 2)
    parent = await route(policy, p, "a", "root")
    await route(policy, p, "x")  # round-robin would now give the child the other worker
    assert await route(policy, p, "b", "child", parent_session_id="root") == parent


async def test_health_reports_affinity_beside_the_policy():
    policy, p = affinity(mode="soft"), pool(1, 2)
    await route(policy, p, "a", "s", free=False)
    health = policy.health()["router"]
    assert health["router_mode"] == "round-robin"
    assert health["session_affinity"] == {"mode": "soft", "ttl_secs": TTL, "sessions": 1, "full_refusals": 0,
                                          "lost": 0, "replica_events_applied": 0}


# -- busy bound workers: hard waits, soft moves -------------------------------------------------
def kv_busy_policy(mode: str) -> tuple[SessionAffinityPolicy, WorkerPool]:
    # A worker is busy while more than 10 prompt tokens wait for their first token on it.
    config = KvRouterConfig(active_prefill_tokens_threshold=10, router_queue_timeout_secs=60)
    workers = tuple(WorkerInfo(i, EID, card(), f"127.0.0.1:{1000 + i}") for i in (1, 2))
    return affinity(KvPolicy(config), mode), WorkerPool("m", Role.DECODE, 1, 4, workers)


async def bind_busy(policy: SessionAffinityPolicy, p: WorkerPool) -> int:
    """Bind session s, then make its worker busy with a long prompt pinned there."""
    bound = await route(policy, p, "a", "s", tokens=[1, 2, 3])
    await policy.select(p, req("blocker", tokens=list(range(100, 140)), backend_instance_id=bound), set())
    assert policy.busy(p, bound) and not policy.busy(p, 3 - bound)
    return bound


async def test_hard_mode_waits_for_its_busy_worker():
    policy, p = kv_busy_policy("hard")
    bound = await bind_busy(policy, p)
    waiting = asyncio.ensure_future(policy.select(p, req("b", "s"), set()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()  # queued for the bound worker, not sent to the idle one
    policy.prefill_complete("blocker")
    choice = await asyncio.wait_for(waiting, 30)
    assert choice.worker.instance_id == bound


async def test_soft_mode_moves_off_its_busy_worker_and_rebinds():
    policy, p = kv_busy_policy("soft")
    bound = await bind_busy(policy, p)
    assert await route(policy, p, "b", "s") == 3 - bound
    policy.prefill_complete("blocker")
    assert await route(policy, p, "c", "s") == 3 - bound  # the binding moved with the session


async def test_cached_tokens_are_counted_on_the_bound_worker():
    """Conditional disaggregation asks what is cached where the request will go: its session's worker."""
    workers = tuple(WorkerInfo(i, EID, card(publishes=False), f"127.0.0.1:{1000 + i}") for i in (1, 2))
    policy = affinity(KvPolicy(KvRouterConfig(use_kv_events=False)))  # caches predicted from routing
    p = WorkerPool("m", Role.DECODE, 1, 4, workers)
    prompt = list(range(1, 17))
    holder = await route(policy, p, "a", tokens=prompt)
    assert await route(policy, p, "b", "s", tokens=[90, 91, 92], backend_instance_id=3 - holder) == 3 - holder
    assert policy.cached_tokens(p, req("c", tokens=prompt), set()) >= 12
    assert policy.cached_tokens(p, req("d", "s", tokens=prompt), set()) == 0


async def test_query_follows_the_binding_and_binds_nothing():
    policy, p = affinity(), pool(1, 2)
    first = await route(policy, p, "a0", "s")
    assert (await policy.query(p, req("q", "s"), set())).worker.instance_id == first
    assert (await policy.query(p, req("q", "new"), set())).worker.instance_id == 3 - first
    assert policy.table.lookup(("m", "new")) is None  # the query bound nothing
    assert (await policy.query(p, req("q", "s"), {first})).worker.instance_id == 3 - first
    assert policy.table.lookup(("m", "s")).worker == first  # nor forgot the binding it could not use

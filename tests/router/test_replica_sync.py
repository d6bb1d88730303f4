"""Router replicas' shared bookings (`replica_sync`): what a peer books is booked here with the
same output blocks, and a peer that goes silent (crashed, partitioned) has its bookings freed
instead of leaving its load on the workers for good."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.router import replica_sync
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_router import KvRouter
from dynamo.router.replica_sync import ActiveSequenceEvent, ReplicaSync, _decode, _encode

BS = 16


def _router() -> KvRouter:
    router = KvRouter(BS, KvRouterConfig())
    router.add_worker(1, total_kv_blocks=1000)
    return router


def _sync(router: KvRouter) -> ReplicaSync:
    return ReplicaSync(None, None, "me", 7, lambda model: router if model == "m" else None)


def _add(rid: str, router_id: str = "peer", expected: int = 0) -> ActiveSequenceEvent:
    return ActiveSequenceEvent(router_id=router_id, model="m", request_id=rid, kind="add", worker_id=1,
                               seq_hashes=[11, 12, 13, 14], isl=4 * BS, expected_output_tokens=expected)


def _blocks(router: KvRouter) -> int:
    return router.active._workers[(1, 0)].active_blocks


def test_a_peers_booking_holds_the_output_blocks_its_answer_will_fill():
    ours, theirs = _router(), _router()
    ours.add_request("local", ours.select([1] * (4 * BS), request_id="local"), [1] * (4 * BS), max_tokens=64)
    _sync(theirs).apply(_add("local", expected=64))
    assert _blocks(theirs) == 4 + 64 // BS  # the prompt's 4 blocks and the answer's 4, as the booker has
    assert _blocks(theirs) == _blocks(ours)


def test_the_expected_length_survives_the_wire():
    event = _add("r", expected=300)
    assert _decode(_encode(event)).expected_output_tokens == 300


def test_a_silent_replicas_bookings_are_freed_and_a_live_ones_kept(monkeypatch):
    router = _router()
    sync = _sync(router)
    for replica in ("crashed", "alive"):
        sync.apply(ActiveSequenceEvent(router_id=replica, model="", request_id="", kind="alive"))
    sync.apply(_add("dead-1", "crashed"))
    sync.apply(_add("dead-2", "crashed"))
    sync.apply(_add("live-1", "alive"))
    assert router.active.booking("dead-1") is not None
    monkeypatch.setattr(replica_sync, "SILENT_AFTER", 0.05)
    asyncio.run(asyncio.sleep(0.1))
    sync.apply(ActiveSequenceEvent(router_id="alive", model="", request_id="", kind="alive"))
    assert sync.forget_silent() == 2
    assert router.active.booking("dead-1") is None and router.active.booking("dead-2") is None
    assert router.active.booking("live-1") is not None
    assert sync.forget_silent() == 0  # the crashed replica is forgotten once


@pytest.mark.parametrize("kind", ["prefill", "free"])
def test_a_peers_later_events_still_apply(kind):
    router = _router()
    sync = _sync(router)
    sync.apply(_add("r"))
    sync.apply(ActiveSequenceEvent(router_id="peer", model="m", request_id="r", kind=kind))
    assert (router.active.booking("r") is None) == (kind == "free")


def test_the_heartbeat_is_owned_and_cancelled_at_close():
    async def run() -> None:
        sync = _sync(_router())
        sync._beat = asyncio.get_running_loop().create_task(sync._heartbeat())
        await asyncio.sleep(0)
        beat = sync._beat

        class _Topic:
            async def close(self) -> None:
                return None
        sync.topic = _Topic()
        await sync.close()
        assert beat.cancelled()
    asyncio.run(run())


def test_a_replica_that_never_says_it_is_alive_keeps_its_bookings(monkeypatch):
    """An older version sends no heartbeats (a rolling upgrade): its running requests stay booked (until
    REMOTE_TTL) instead of being freed as if it had died."""
    router = _router()
    sync = _sync(router)
    sync.apply(_add("old-1", "old-version"))
    monkeypatch.setattr(replica_sync, "SILENT_AFTER", 0.0)
    assert sync.forget_silent() == 0 and router.active.booking("old-1") is not None


class _Wire(ReplicaSync):
    """A replica whose events go into a list (encoded as on the event plane) instead of onto the event plane."""

    def __init__(self, router_id: str, router_for) -> None:
        super().__init__(None, None, router_id, 7, router_for)
        self.sent: list[bytes] = []

    def publish(self, namespace: str, component: str, event: ActiveSequenceEvent) -> None:
        self.sent.append(_encode(event))

    def deliver_to(self, peer: ReplicaSync) -> None:
        for payload in self.sent:
            peer._receive(payload)
        self.sent.clear()


def test_a_free_after_the_pool_emptied_still_reaches_the_peers():
    """A worker leaves (a failed canary) while a request runs on it, the request ends, the worker rejoins: the
    peers must have dropped the booking too, or the rejoined worker looks busy to them for good."""
    from dynamo.router.kv_policy import KvPolicy
    from tests.router.test_policy import pool, req

    async def run() -> None:
        ours, theirs = KvPolicy(KvRouterConfig()), KvPolicy(KvRouterConfig())
        ours.sync, theirs.sync = _Wire("A", ours._router_for), _Wire("B", theirs._router_for)

        def membership(*workers: int, version: int) -> None:
            for policy in (ours, theirs):
                policy.on_membership_change(pool(*workers, version=version))

        membership(1, version=1)
        await ours.select(pool(1, version=1), req("r", list(range(16))), set())
        ours.sync.deliver_to(theirs.sync)
        assert theirs.routes["m"].router.active.requests((1, 0)) == 1
        membership(version=2)  # the worker leaves both replicas' pools
        ours.free("r")
        ours.sync.deliver_to(theirs.sync)
        membership(1, version=3)  # and comes back
        assert theirs.routes["m"].router.active.requests((1, 0)) == 0
        assert ours._synced == {}
        for policy in (ours, theirs):
            await policy.close()
    asyncio.run(run())

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

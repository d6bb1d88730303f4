"""The worker's KV sink: every event is published in its tier; only the device tier's make the
local state a router resyncs from, while every tier's ids count in the worker's one sequence."""

from __future__ import annotations

from dynamo.llm.kv_events.protocol import KvCacheEvent, KvStored, StoredBlock
from dynamo.worker.kv_relay import KvSink


class Publisher:
    """The publisher's push, recording (tier, event id)."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, int]] = []

    def push(self, event: KvCacheEvent, storage_tier: str = "device") -> None:
        self.pushed.append((storage_tier, event.event_id))


def stored(event_id: int, block: int) -> KvCacheEvent:
    return KvCacheEvent(event_id=event_id, data=KvStored(parent_hash=None, blocks=[
        StoredBlock(block_hash=block, tokens_hash=block + 1)]))


def test_offloaded_events_are_published_but_are_not_device_state():
    sink = KvSink(7)
    sink.push(stored(1, 10))  # before publishing is attached: dropped
    sink.publisher = Publisher()  # type: ignore[assignment]
    sink.push(stored(2, 20))
    sink.push(stored(3, 30), "host_pinned")
    assert sink.publisher.pushed == [("device", 2), ("host_pinned", 3)]
    dump = sink.local.dump()
    assert [b.block_hash for e in dump.events for b in e.data.blocks] == [20]  # the device's blocks only
    assert dump.last_event_id == 3  # a router resynced to it expects event 4 next

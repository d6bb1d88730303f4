"""Event plane over real sockets: ZMQ discovered through the file store, and a real NATS."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import pytest

from dynamo.runtime.discovery.base import KeyValueStore, make_store
from dynamo.runtime.event_plane.base import (
    EventPublisher,
    EventSubscriber,
    channel_key,
    create_publisher,
    create_subscriber,
    nats_subject,
    resolve_kind,
)
from dynamo.runtime.event_plane.zmq_plane import ZmqPublisher
from tests.fixtures.servers import nats_server  # noqa: F401  (pytest fixture)

DEADLINE = 20.0
NS, COMP, TOPIC = "dynamo", "backend", "kv-events"


@pytest.fixture
async def file_stores(tmp_path) -> AsyncIterator[list[KeyValueStore]]:
    """Three processes' worth of stores sharing one directory: two publishers, one subscriber."""
    stores = [make_store("file", ttl=5.0, root=str(tmp_path / "kv"), poll_interval=0.1) for _ in range(3)]
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


class Collector:
    """Drains a subscriber in the background: instance id -> payloads received."""

    def __init__(self, subscriber: EventSubscriber) -> None:
        self.got: dict[int, list[bytes]] = {}
        self.task = asyncio.create_task(self._run(subscriber))

    async def _run(self, subscriber: EventSubscriber) -> None:
        async for instance_id, payload in subscriber:
            self.got.setdefault(instance_id, []).append(payload)

    async def publish_until_received(self, publishers: dict[int, EventPublisher], tag: bytes) -> None:
        """Keep publishing (ZMQ slow joiners lose early messages) until each id delivered `tag`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while loop.time() < deadline:
            missing = [i for i in publishers if tag + b"%x" % i not in self.got.get(i, [])]
            if not missing:
                return
            for instance_id in missing:
                await publishers[instance_id].publish(tag + b"%x" % instance_id)
            await asyncio.sleep(0.1)
        pytest.fail(f"not received within {DEADLINE}s: got {self.got}")


async def wait_for(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_zmq_two_publishers_one_subscriber(file_stores):
    store_a, store_b, store_sub = file_stores
    a, b = store_a.lease_id, store_b.lease_id
    subscriber = await create_subscriber("zmq", store_sub, NS, COMP, TOPIC)
    pub_a = await create_publisher("zmq", store_a, NS, COMP, TOPIC, a)
    pub_b = await create_publisher(None, store_b, NS, COMP, TOPIC, b)  # zmq is the default for file
    assert isinstance(pub_b, ZmqPublisher)
    other = await create_publisher("zmq", store_b, NS, COMP, TOPIC + "-other", b)  # must not leak in
    collector = Collector(subscriber)
    try:
        advert = json.loads(await store_sub.get(channel_key(NS, COMP, TOPIC, a)))
        assert advert["type"] == "EventChannel" and advert["instance_id"] == a and advert["topic"] == TOPIC
        assert advert["transport"]["kind"] == "Zmq"
        assert advert["transport"]["config"]["endpoint"].startswith("tcp://127.0.0.1:")

        await other.publish(b"wrong topic")
        await collector.publish_until_received({a: pub_a, b: pub_b}, b"hello-")
        assert set(collector.got) == {a, b}
        assert all(p == b"hello-%x" % i for i, payloads in collector.got.items() for p in payloads)

        await pub_a.close()  # withdraws its advert: the subscriber disconnects from it
        await wait_for(lambda: a not in subscriber.publishers, "disconnect from the closed publisher")
        assert b in subscriber.publishers
        assert await store_sub.get(channel_key(NS, COMP, TOPIC, a)) is None
        await collector.publish_until_received({b: pub_b}, b"after-")
        with pytest.raises(RuntimeError):
            await pub_a.publish(b"closed")
    finally:
        for publisher in (pub_a, pub_b, other):
            await publisher.close()
        await subscriber.close()
        await asyncio.wait_for(collector.task, DEADLINE)  # iteration ends on close


async def test_zmq_publisher_store_close_disconnects(file_stores):
    """A publisher whose process goes away (its lease ends) is dropped by subscribers."""
    store_a, _, store_sub = file_stores
    subscriber = await create_subscriber("zmq", store_sub, NS, COMP, TOPIC)
    publisher = await create_publisher("zmq", store_a, NS, COMP, TOPIC, store_a.lease_id)
    try:
        await wait_for(lambda: store_a.lease_id in subscriber.publishers, "connect")
        await store_a.close()
        await wait_for(lambda: not subscriber.publishers, "disconnect after lease end")
    finally:
        await publisher.close()
        await subscriber.close()


async def test_publish_drops_and_counts_when_buffer_full(file_stores):
    store = file_stores[0]
    publisher = ZmqPublisher(store, NS, COMP, TOPIC, store.lease_id)
    await publisher.start(buffer=4)
    for i in range(10):  # no await in between: the sender task cannot drain
        await publisher.publish(b"%d" % i)
    assert (publisher.published, publisher.dropped) == (4, 6)
    await publisher.close()


async def test_nats_two_publishers_one_subscriber(nats_server, monkeypatch):
    monkeypatch.setenv("NATS_SERVER", nats_server)
    store = make_store("mem", name="nats-test")
    await store.start()
    a, b = 0x11, 0x22
    subscriber = await create_subscriber("nats", store, NS, COMP, TOPIC)
    pub_a = await create_publisher("nats", store, NS, COMP, TOPIC, a)
    pub_b = await create_publisher("nats", store, NS, COMP, TOPIC, b)
    other = await create_publisher("nats", store, NS, "prefill", TOPIC, 0x33)  # other component
    collector = Collector(subscriber)
    try:
        await other.publish(b"wrong component")
        await collector.publish_until_received({a: pub_a, b: pub_b}, b"hello-")
        assert set(collector.got) == {a, b}
        await pub_a.close()
        with pytest.raises(RuntimeError):
            await pub_a.publish(b"closed")
        await collector.publish_until_received({b: pub_b}, b"after-")
        assert 0x33 not in collector.got
    finally:
        for publisher in (pub_a, pub_b, other):
            await publisher.close()
        await subscriber.close()
        await asyncio.wait_for(collector.task, DEADLINE)
        await store.close()


def test_resolve_kind(monkeypatch):
    monkeypatch.delenv("DYN_EVENT_PLANE", raising=False)
    monkeypatch.delenv("NATS_SERVER", raising=False)
    assert resolve_kind(None, "file") == "zmq"
    assert resolve_kind(None, "etcd") == "zmq"
    assert resolve_kind("NATS", "file") == "nats"
    monkeypatch.setenv("NATS_SERVER", "nats://x:4222")
    assert resolve_kind(None, "etcd") == "nats"
    assert resolve_kind(None, "mem") == "zmq"
    monkeypatch.setenv("DYN_EVENT_PLANE", "zmq")
    assert resolve_kind(None, "etcd") == "zmq"
    with pytest.raises(ValueError):
        resolve_kind("kafka", "file")
    assert nats_subject(NS, COMP, TOPIC) == "namespace.dynamo.component.backend.kv-events"


def test_zmq_publishers_bind_where_other_pods_reach_them_unless_discovery_is_one_machines(monkeypatch):
    from dynamo.runtime.event_plane.zmq_plane import _advertised_host

    monkeypatch.delenv("DYN_EVENT_PLANE_HOST", raising=False)
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    assert _advertised_host("file") == ("127.0.0.1", "127.0.0.1")
    assert _advertised_host("kubernetes") == ("*", "10.1.2.3")  # as the request plane advertises itself
    assert _advertised_host("etcd") == ("*", "10.1.2.3")
    monkeypatch.setenv("DYN_EVENT_PLANE_HOST", "127.0.0.1")
    assert _advertised_host("etcd") == ("127.0.0.1", "127.0.0.1")

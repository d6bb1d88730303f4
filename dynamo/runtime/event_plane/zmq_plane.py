"""Brokerless event plane over ZMQ PUB/SUB (the default).

Each publisher binds a PUB socket on `tcp://{DYN_EVENT_PLANE_HOST or 127.0.0.1}:0` and
advertises the address under its lease at Dynamo's key
`v1/event_channels/namespace/{ns}/component/{comp}[/endpoint/{ep}]/topic/{topic}/{id:x}`
with Dynamo's record `{type: "EventChannel", scope, topic, instance_id, transport: {kind:
"Zmq", config: {endpoint}}}`; subscribers watch the component's prefix, connect one SUB
socket to every advertised publisher of their topic, and disconnect when an advert
disappears (clean close, or lease expiry after a crash).

Frames (Dynamo's): `[topic, publisher_id u64 BE, sequence u64 BE, envelope]`, the
envelope as `base.encode_envelope` frames it.

Slow joiners: ZMQ PUB drops everything sent before a subscriber's connection is up
(discovery latency plus the TCP handshake). Events published in that window are lost,
by design of the transport; the KV router detects the gap from event ids.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import msgspec
import zmq
import zmq.asyncio

from dynamo.runtime.discovery.base import KeyValueStore
from dynamo.runtime.event_plane.base import (
    DEFAULT_BUFFER,
    QueuedPublisher,
    EventEnvelope,
    QueuedSubscriber,
    SendQueue,
    channel_key,
    channel_prefix,
    decode_envelope,
    encode_envelope,
    now_ms,
)
from dynamo.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")


class ZmqConfig(msgspec.Struct):
    endpoint: str  # tcp://host:port of the PUB socket


class ChannelTransport(msgspec.Struct):
    kind: str  # "Zmq"
    config: ZmqConfig


class EventChannel(msgspec.Struct, tag="EventChannel", tag_field="type"):
    """The discovery record advertising one ZMQ publisher (Dynamo's field order)."""

    scope: dict  # {"kind": "endpoint", "endpoint": {namespace, component, name}} or a component scope
    topic: str
    instance_id: int
    transport: ChannelTransport


def channel_scope(namespace: str, component: str, endpoint: str | None) -> dict:
    if endpoint:
        return {"kind": "endpoint", "endpoint": {"namespace": namespace, "component": component, "name": endpoint}}
    return {"kind": "component", "component": {"namespace": namespace, "name": component}}


def encode_frames(topic: str, publisher_id: int, sequence: int, published_at: int, payload: bytes) -> list[bytes]:
    """One message as Dynamo's ZMQ transport sends it."""
    envelope = encode_envelope(EventEnvelope(publisher_id, sequence, published_at, topic, payload))
    return [topic.encode(), _U64.pack(publisher_id), _U64.pack(sequence), envelope]


def decode_frames(frames: list[bytes], topic: bytes) -> EventEnvelope | None:
    """The envelope of a message of `topic`; None for another topic or a malformed message."""
    if len(frames) != 4 or frames[0] != topic:
        return None  # another topic sharing our prefix, or a foreign sender
    try:
        envelope = decode_envelope(frames[3])
        header = (_U64.unpack(frames[1])[0], _U64.unpack(frames[2])[0])
    except (ValueError, struct.error, msgspec.DecodeError) as exc:
        log.debug("event plane: dropping a malformed %s frame: %s", topic, exc)
        return None
    if header != (envelope.publisher_id, envelope.sequence):
        log.debug("event plane: dropping a %s frame whose header disagrees with its envelope", topic)
        return None
    return envelope


def _advertised_host(backend: str) -> tuple[str, str]:
    """(bind host, host others should connect to): DYN_EVENT_PLANE_HOST, else loopback where discovery
    is one machine's (file, mem), else every interface, advertised as the request plane's host."""
    settings = RuntimeSettings.from_env()
    host = settings.event_plane_host
    if host is None:
        if backend in ("file", "mem"):
            return "127.0.0.1", "127.0.0.1"
        host = "0.0.0.0"
    if host in ("0.0.0.0", "*"):
        if settings.pod_ip:
            return "*", settings.pod_ip
        try:
            return "*", socket.gethostbyname(socket.gethostname())
        except OSError:  # no resolvable host name: loopback still serves this machine
            return "*", "127.0.0.1"
    return host, host


class ZmqPublisher(QueuedPublisher):
    def __init__(self, store: KeyValueStore, namespace: str, component: str, topic: str, instance_id: int,
                 endpoint: str | None = None):
        self.store = store
        self.topic = topic
        self.instance_id = instance_id
        self.key = channel_key(namespace, component, topic, instance_id, endpoint)
        self.scope = channel_scope(namespace, component, endpoint)
        self.address = ""
        self._sock: zmq.asyncio.Socket | None = None
        self._sender: SendQueue | None = None

    async def start(self, buffer: int = DEFAULT_BUFFER) -> None:
        bind_host, public_host = _advertised_host(self.store.backend)
        sock = zmq.asyncio.Context.instance().socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, buffer)
        sock.bind(f"tcp://{bind_host}:0")
        port = sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
        self._sock = sock
        self.address = f"tcp://{public_host}:{port}"
        self._sender = SendQueue(self._send, f"zmq:{self.topic}", buffer)
        advert = EventChannel(self.scope, self.topic, self.instance_id, ChannelTransport("Zmq", ZmqConfig(self.address)))
        await self.store.put(self.key, msgspec.json.encode(advert))

    async def _send(self, seq: int, payload: bytes) -> None:
        frames = encode_frames(self.topic, self.instance_id, seq, now_ms(), payload)
        await self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)

    async def close(self) -> None:
        """Withdraw the advert first so subscribers disconnect, then stop sending."""
        sender, self._sender = self._sender, None
        if sender is None:
            return
        if not self.store.closed:
            try:
                await self.store.delete(self.key)
            except Exception as exc:  # the lease expiry removes it anyway
                log.debug("could not withdraw event channel %s: %s", self.key, exc)
        await sender.close()
        self._sock.close(linger=0)


class ZmqSubscriber(QueuedSubscriber):
    def __init__(self, store: KeyValueStore, namespace: str, component: str, topic: str):
        super().__init__()
        self.store = store
        self.topic = topic
        self.prefix = channel_prefix(namespace, component)
        self._topic = topic.encode()
        self._sock: zmq.asyncio.Socket | None = None
        self._connected: dict[str, tuple[int, str]] = {}  # advert key -> (instance id, address)
        self._tasks: list[asyncio.Task] = []

    @property
    def publishers(self) -> dict[int, str]:
        """Instance id -> address of every publisher currently connected."""
        return {iid: address for iid, address in self._connected.values()}

    async def start(self) -> None:
        sock = zmq.asyncio.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        self._sock = sock
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow_adverts(), name=f"zmq-sub-watch-{self.topic}"),
            loop.create_task(self._receive(), name=f"zmq-sub-recv-{self.topic}"),
        ]

    async def _follow_adverts(self) -> None:
        """Connect to publishers as adverts appear; disconnect as they vanish."""
        try:
            async for event in self.store.watch_prefix(self.prefix):
                if event.kind == "put":
                    self._connect(event.key, event.value or b"")
                else:
                    self._disconnect(event.key)
        except asyncio.CancelledError:
            raise
        except Exception:  # say so: without the watch no new publisher is ever joined
            log.exception("event plane: discovery watch on %s failed", self.prefix)

    def _connect(self, key: str, value: bytes) -> None:
        try:
            advert = msgspec.json.decode(value, type=EventChannel)
        except msgspec.DecodeError:
            log.warning("ignoring malformed event channel advert %s", key)
            return
        if advert.topic != self.topic:
            return  # another topic of this component
        address = advert.transport.config.endpoint
        self._disconnect(key)
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            log.warning("event plane: cannot connect to %s (%s): %s", address, key, exc)
            return
        self._connected[key] = (advert.instance_id, address)
        log.debug("event plane: %s connected to %s", self.topic, address)

    def _disconnect(self, key: str) -> None:
        entry = self._connected.pop(key, None)
        if entry is None:
            return
        self._last_seq.pop(entry[0], None)
        try:
            self._sock.disconnect(entry[1])
        except zmq.ZMQError:
            pass

    async def _receive(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            envelope = decode_frames(frames, self._topic)
            if envelope is None:
                continue
            self._count_gap(envelope.publisher_id, envelope.sequence)
            await self._queue.put((envelope.publisher_id, envelope.payload))  # backpressure to the SUB HWM

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
        self._end()


async def create_publisher(store: KeyValueStore, namespace: str, component: str, topic: str, instance_id: int,
                           endpoint: str | None = None):
    publisher = ZmqPublisher(store, namespace, component, topic, instance_id, endpoint)
    await publisher.start()
    return publisher


async def create_subscriber(store: KeyValueStore, namespace: str, component: str, topic: str):
    subscriber = ZmqSubscriber(store, namespace, component, topic)
    await subscriber.start()
    return subscriber

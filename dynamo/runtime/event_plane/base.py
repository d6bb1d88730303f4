"""The event-plane boundary: fire-and-forget publish/subscribe of opaque byte payloads
on a topic scoped to a namespace and component (KV events, load metrics, router sync).

Delivery is at-most-once: a publisher never waits for subscribers, a full send buffer
drops (and counts) the event, and a subscriber that joins late misses what was sent
before it connected. Consumers that need completeness (the KV router) detect gaps from
their own event ids; each message also carries the publisher's sequence number so the
subscriber counts gaps it can see (`missed`).

Every payload travels in NVIDIA Dynamo's event envelope (`encode_envelope`): a 5-byte
frame header (version u8 = 1, body length u32 BE) then a msgpack map `{publisher_id,
sequence, published_at (Unix ms), topic, payload (bin)}`; sequences start at 0 per
publisher. tests/compat/test_vectors.py holds it to bytes Dynamo 1.6.1 emitted.

Transports register by name (`zmq`, `nats`) and are imported lazily.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import struct
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

import msgspec

from dynamo.runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from dynamo.runtime.discovery.base import KeyValueStore

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 4096  # events held per publisher before publish() starts dropping
CLOSE_FLUSH_TIMEOUT = 1.0


FRAME_VERSION = 1
_FRAME_HEADER = struct.Struct(">BI")  # version, body length


class EventEnvelope(msgspec.Struct):
    """Dynamo's envelope around every event-plane payload (field order is the wire order)."""

    publisher_id: int  # the publishing process's instance id
    sequence: int  # per publisher, from 0; a jump means events were lost
    published_at: int  # Unix time in milliseconds
    topic: str
    payload: bytes


_envelope_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(EventEnvelope)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode_envelope(envelope: EventEnvelope) -> bytes:
    body = _envelope_encoder.encode(envelope)
    return _FRAME_HEADER.pack(FRAME_VERSION, len(body)) + body


def decode_envelope(frame: bytes) -> EventEnvelope:
    """Raises ValueError (or a msgspec error) on a frame that is not a version-1 envelope."""
    if len(frame) < _FRAME_HEADER.size:
        raise ValueError(f"event frame of {len(frame)} bytes has no header")
    version, length = _FRAME_HEADER.unpack_from(frame)
    if version != FRAME_VERSION or length != len(frame) - _FRAME_HEADER.size:
        raise ValueError(f"event frame version {version}, length {length} of {len(frame) - _FRAME_HEADER.size}")
    return _envelope_decoder.decode(memoryview(frame)[_FRAME_HEADER.size:])


EVENT_CHANNELS = "v1/event_channels/"


def channel_prefix(namespace: str, component: str) -> str:
    """Discovery prefix under which a component's ZMQ publishers advertise, whatever their
    topic or endpoint (Dynamo's layout: `namespace/{ns}/component/{comp}/...`)."""
    return f"{EVENT_CHANNELS}namespace/{namespace}/component/{component}/"


def channel_key(namespace: str, component: str, topic: str, instance_id: int, endpoint: str | None = None) -> str:
    """One publisher's advert: `.../component/{comp}[/endpoint/{ep}]/topic/{topic}/{id:x}`;
    Dynamo scopes its KV-event publisher to the worker's endpoint."""
    scope = f"endpoint/{endpoint}/" if endpoint else ""
    return f"{channel_prefix(namespace, component)}{scope}topic/{topic}/{instance_id:x}"


def nats_subject(namespace: str, component: str, topic: str) -> str:
    return f"namespace.{namespace}.component.{component}.{topic}"


class EventPublisher(ABC):
    """Publishes to one topic; `published`/`dropped` count what publish() accepted/refused."""

    published: int = 0
    dropped: int = 0

    @abstractmethod
    def offer(self, payload: bytes) -> None:
        """Queue the payload without waiting for anything; drops when the buffer is full.
        RuntimeError once closed. For callers outside a coroutine (a router's booking hooks)."""

    async def publish(self, payload: bytes) -> None:
        """`offer`, for coroutines."""
        self.offer(payload)

    @abstractmethod
    async def close(self) -> None: ...


class EventSubscriber(ABC):
    """Receives a topic from every publisher; iterate for (publisher_instance_id, payload)."""

    missed: int = 0  # sequence gaps observed (events lost in transit or dropped at source)
    # Whether the transport can deliver right now (a brokered plane loses its server; a
    # brokerless one is always up). `on_link(up)` is called on every change.
    link_up: bool = True
    on_link: Callable[[bool], None] | None = None

    def _set_link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        if self.on_link is not None:
            self.on_link(up)

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]: ...

    @abstractmethod
    async def close(self) -> None: ...


RECEIVE_BUFFER = 4096


class QueuedPublisher(EventPublisher):
    """offer() hands the payload to a `SendQueue` (set up by `start()`), never the network."""

    _sender: "SendQueue | None" = None

    def offer(self, payload: bytes) -> None:
        if self._sender is None:
            raise RuntimeError("publisher closed or not started")
        self._sender.offer(payload)
        self.published, self.dropped = self._sender.accepted, self._sender.dropped


class QueuedSubscriber(EventSubscriber):
    """Transport callbacks feed one bounded queue (backpressure to the transport's own
    buffers); iterating drains it. Sequence gaps per publisher are counted in `missed`."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(RECEIVE_BUFFER)
        self._last_seq: dict[int, int] = {}
        self._closed = False
        self.missed = 0

    def _count_gap(self, instance_id: int, seq: int) -> None:
        last = self._last_seq.get(instance_id)
        if seq and last is not None and seq > last + 1:
            self.missed += seq - last - 1
        self._last_seq[instance_id] = seq

    async def __aiter__(self):
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let other iterators end too
                return
            yield item

    def _end(self) -> None:
        while not self._queue.empty():  # make room for the end marker
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class SendQueue:
    """Bounded buffer plus one sender task: decouples publish() from the socket.

    `send(seq, payload)` is called in order. Sequence numbers (from 0, as Dynamo's) are
    assigned on offer, so a dropped event leaves a gap subscribers can count.
    """

    def __init__(self, send: Callable[[int, bytes], Awaitable[None]], name: str, maxsize: int = DEFAULT_BUFFER):
        self._send = send
        self._name = name
        self._queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(maxsize)
        self._seq = -1
        self.accepted = 0
        self.dropped = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"event-send-{name}")

    def offer(self, payload: bytes) -> bool:
        self._seq += 1
        try:
            self._queue.put_nowait((self._seq, bytes(payload)))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event publisher %s: buffer full, %d events dropped so far", self._name, self.dropped)
            return False
        self.accepted += 1
        return True

    async def _run(self) -> None:
        while True:
            seq, payload = await self._queue.get()
            try:
                await self._send(seq, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one failed send must not stop the publisher
                log.warning("event publisher %s: send failed: %s", self._name, exc)
            finally:
                self._queue.task_done()

    async def close(self, flush_timeout: float = CLOSE_FLUSH_TIMEOUT) -> None:
        """Give queued events a moment to go out, then stop the sender."""
        try:
            await asyncio.wait_for(self._queue.join(), flush_timeout)
        except asyncio.TimeoutError:
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


_PLANES: dict[str, str] = {
    "zmq": "dynamo.runtime.event_plane.zmq_plane",
    "nats": "dynamo.runtime.event_plane.nats_plane",
}


def resolve_kind(kind: str | None, store_backend: str, settings: RuntimeSettings | None = None) -> str:
    """Explicit kind, else DYN_EVENT_PLANE, else nats for etcd when NATS_SERVER is set, else zmq."""
    settings = settings or RuntimeSettings.from_env()
    chosen = (kind or settings.event_plane or "").strip().lower()
    if not chosen:
        chosen = "nats" if store_backend == "etcd" and settings.nats_server else "zmq"
    if chosen not in _PLANES:
        raise ValueError(f"unknown event plane {chosen!r}; choose from {sorted(_PLANES)}")
    return chosen


def _module(kind: str | None, store: "KeyValueStore"):
    return importlib.import_module(_PLANES[resolve_kind(kind, store.backend)])


async def create_publisher(
    kind: str | None, store: "KeyValueStore", namespace: str, component: str, topic: str, instance_id: int,
    endpoint: str | None = None,
) -> EventPublisher:
    """Start a publisher of `topic` for this instance (ZMQ advertises itself in `store`,
    scoped to `endpoint` when given, else to the component)."""
    return await _module(kind, store).create_publisher(store, namespace, component, topic, instance_id, endpoint)


async def create_subscriber(
    kind: str | None, store: "KeyValueStore", namespace: str, component: str, topic: str
) -> EventSubscriber:
    """Start a subscriber of `topic` from every publisher in namespace/component (any endpoint)."""
    return await _module(kind, store).create_subscriber(store, namespace, component, topic)

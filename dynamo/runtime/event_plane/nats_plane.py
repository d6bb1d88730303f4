"""Event plane over a NATS server (core NATS, at-most-once), via nats-py.

Server: NATS_SERVER (default `nats://localhost:4222`; credentials may be embedded in
the URL). Subject: `namespace.{ns}.component.{comp}.{topic}`, as NVIDIA Dynamo uses.
Each message is one framed Dynamo event envelope (`base.encode_envelope`), which
carries the publisher's instance id and sequence number.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from dynamo.runtime.discovery.base import KeyValueStore
from dynamo.runtime.event_plane.base import DEFAULT_BUFFER, EventEnvelope, QueuedPublisher, QueuedSubscriber, \
    SendQueue, decode_envelope, encode_envelope, nats_subject, now_ms
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.tls import nats_context

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RECONNECT_WAIT = 1.0


def server_url() -> str:
    return RuntimeSettings.from_env().nats_url()


async def connect(name: str, on_link: Callable[[bool], None] | None = None) -> Client:
    """One connection per publisher/subscriber; reconnects forever once established.
    `on_link(False)` when the server is lost, `on_link(True)` when reconnected."""

    async def on_error(exc: Exception) -> None:
        log.debug("nats %s: %s", name, exc)

    async def on_disconnected() -> None:
        if on_link is not None:
            on_link(False)

    async def on_reconnected() -> None:
        if on_link is not None:
            on_link(True)

    servers = [s.strip() for s in server_url().split(",") if s.strip()]
    tls = nats_context(RuntimeSettings.from_env())
    return await nats.connect(
        servers=servers,
        **({"tls": tls} if tls is not None else {}),
        name=name,
        connect_timeout=CONNECT_TIMEOUT,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )


class NatsPublisher(QueuedPublisher):
    def __init__(self, namespace: str, component: str, topic: str, instance_id: int):
        self.subject = nats_subject(namespace, component, topic)
        self.topic = topic
        self.instance_id = instance_id
        self._nc: Client | None = None
        self._sender: SendQueue | None = None

    async def start(self, buffer: int = DEFAULT_BUFFER) -> None:
        self._nc = await connect(f"dynamo-pub-{self.instance_id:x}")
        self._sender = SendQueue(self._send, f"nats:{self.subject}", buffer)

    async def _send(self, seq: int, payload: bytes) -> None:
        envelope = encode_envelope(EventEnvelope(self.instance_id, seq, now_ms(), self.topic, payload))
        await self._nc.publish(self.subject, envelope)

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is None:
            return
        await sender.close()
        try:
            await asyncio.wait_for(self._nc.drain(), CONNECT_TIMEOUT)  # flushes what was sent
        except Exception as exc:
            log.debug("nats drain failed: %s", exc)
            await self._nc.close()


class NatsSubscriber(QueuedSubscriber):
    def __init__(self, namespace: str, component: str, topic: str):
        super().__init__()
        self.subject = nats_subject(namespace, component, topic)
        self._nc: Client | None = None

    async def start(self) -> None:
        self._nc = await connect(f"dynamo-sub-{self.subject}", self._link_changed)
        await self._nc.subscribe(self.subject, cb=self._on_message)
        await self._nc.flush(CONNECT_TIMEOUT)  # the subscription is live on return

    def _link_changed(self, up: bool) -> None:
        if self._closed:
            return
        if up:
            log.warning("nats: %s delivers again (events sent meanwhile are lost)", self.subject)
        else:
            log.warning("nats: lost %s at %s; reconnecting", self.subject, server_url())
        self._set_link(up)

    async def _on_message(self, msg: Msg) -> None:
        try:
            envelope = decode_envelope(msg.data)
        except (ValueError, msgspec.DecodeError) as exc:
            log.warning("ignoring a malformed event on %s: %s", self.subject, exc)
            return
        self._count_gap(envelope.publisher_id, envelope.sequence)
        await self._queue.put((envelope.publisher_id, envelope.payload))  # backpressure to nats' pending limits

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._nc is not None:
            await self._nc.close()
        self._end()


async def create_publisher(store: KeyValueStore, namespace: str, component: str, topic: str, instance_id: int,
                           endpoint: str | None = None):
    publisher = NatsPublisher(namespace, component, topic, instance_id)
    await publisher.start()
    return publisher


async def create_subscriber(store: KeyValueStore, namespace: str, component: str, topic: str):
    subscriber = NatsSubscriber(namespace, component, topic)
    await subscriber.start()
    return subscriber

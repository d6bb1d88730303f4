"""Event plane: at-most-once publish/subscribe of byte payloads per topic (`zmq`, `nats`)."""

from dynamo.runtime.event_plane.base import (
    EventPublisher,
    EventSubscriber,
    channel_key,
    channel_prefix,
    create_publisher,
    create_subscriber,
    nats_subject,
    resolve_kind,
)

__all__ = [
    "EventPublisher",
    "EventSubscriber",
    "channel_key",
    "channel_prefix",
    "create_publisher",
    "create_subscriber",
    "nats_subject",
    "resolve_kind",
]

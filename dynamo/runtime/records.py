"""Discovery records: what a process writes into the key-value store under its lease,
in NVIDIA Dynamo's key layout (instance ids in lowercase hex):

- `v1/instances/{ns}/{component}/{endpoint}/{instance_id:x}`: a serving endpoint instance
- `v1/mdc/{ns}/{component}/{endpoint}/{instance_id:x}`: the model card it serves
- `v1/event_channels/namespace/{ns}/component/{comp}[/endpoint/{ep}]/topic/{topic}/{id:x}`: an event
  publisher (see `dynamo.runtime.event_plane`)
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

INSTANCES = "v1/instances/"
MDC = "v1/mdc/"
EVENT_CHANNELS = "v1/event_channels/"
DEFAULT_NAMESPACE = "dynamo"


class EndpointId(NamedTuple):
    namespace: str
    component: str
    endpoint: str

    @property
    def path(self) -> str:
        return f"{self.namespace}.{self.component}.{self.endpoint}"

    def __str__(self) -> str:
        return f"dyn://{self.path}"


def parse_endpoint(text: str, default_namespace: str = DEFAULT_NAMESPACE) -> EndpointId:
    """Parse `dyn://ns.component.endpoint`, `ns.component.endpoint` or `component.endpoint`."""
    body = text[len("dyn://") :] if text.startswith("dyn://") else text
    parts = body.split(".")
    if len(parts) == 2:
        parts.insert(0, default_namespace)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"invalid endpoint {text!r}: expected dyn://namespace.component.endpoint")
    return EndpointId(*parts)


class InstanceRecord(msgspec.Struct, kw_only=True):
    namespace: str
    component: str
    endpoint: str
    instance_id: int
    transport: dict[str, str]  # {"tcp": "host:port"}

    @property
    def address(self) -> str:
        return self.transport["tcp"]


def instance_key(eid: EndpointId, instance_id: int) -> str:
    return f"{INSTANCES}{eid.namespace}/{eid.component}/{eid.endpoint}/{instance_id:x}"


def mdc_key(eid: EndpointId, instance_id: int) -> str:
    return f"{MDC}{eid.namespace}/{eid.component}/{eid.endpoint}/{instance_id:x}"


def endpoint_prefix(bucket: str, eid: EndpointId) -> str:
    return f"{bucket}{eid.namespace}/{eid.component}/{eid.endpoint}/"


def namespace_prefix(bucket: str, namespace: str | None) -> str:
    return f"{bucket}{namespace}/" if namespace else bucket


def instance_id_from_key(key: str) -> int:
    return int(key.rsplit("/", 1)[1].split("/")[0], 16)


def split_key(bucket: str, key: str) -> tuple[EndpointId, int]:
    """`v1/mdc/ns/comp/ep/1a2b[/suffix]` -> (EndpointId, instance id)."""
    parts = key[len(bucket) :].split("/")
    if len(parts) < 4:
        raise ValueError(f"malformed discovery key {key!r}")
    return EndpointId(parts[0], parts[1], parts[2]), int(parts[3], 16)


instance_encoder = msgspec.json.Encoder()
instance_decoder = msgspec.json.Decoder(InstanceRecord)

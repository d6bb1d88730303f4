"""What Kubernetes-native discovery sees (discovery/kubernetes.py): the records of every
DynamoWorkerMetadata whose pod is ready in a discovery EndpointSlice, as the keys and values
the other backends hold; the translation between those keys and Dynamo's `spec.data` layout;
and Dynamo's instance id of a pod.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from dynamo.runtime.records import INSTANCES, MDC

ID_MASK = 0x001F_FFFF_FFFF_FFFF  # 53 bits: an instance id survives a JSON double
_M64 = 0xFFFF_FFFF_FFFF_FFFF


def pod_instance_id(name: str) -> int:
    """Dynamo's instance id for a pod (or container) name: Rust's `DefaultHasher` of the `str`
    (SipHash-1-3, zero keys, the bytes then 0xFF) masked to 53 bits; never 0."""
    return (_siphash13(name.encode() + b"\xff") & ID_MASK) or 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def _siphash13(data: bytes) -> int:
    v = [0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573]  # keys (0, 0)
    tail = len(data) - len(data) % 8
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, tail, 8)]
    words.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[tail:], "little"))
    for m in words:
        v[3] ^= m
        v = list(_sip_round(*v))
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(3):
        v = list(_sip_round(*v))
    return v[0] ^ v[1] ^ v[2] ^ v[3]


# ----- keys <-> spec.data -------------------------------------------------------------------

def cr_data(records: dict[str, bytes]) -> dict[str, Any]:
    """One process's records as Dynamo's `spec.data` (`endpoints`, `model_cards`) plus `kv` for the rest."""
    data: dict[str, dict[str, Any]] = {"endpoints": {}, "model_cards": {}, "kv": {}}
    for key, value in records.items():
        if key.startswith(INSTANCES):  # Dynamo tags the record as its DiscoveryInstance::Endpoint
            data["endpoints"]["/".join(key[len(INSTANCES):].split("/")[:3])] = {"type": "Endpoint",
                                                                              **json.loads(value)}
        elif key.startswith(MDC):
            parts = key[len(MDC):].split("/")
            data["model_cards"]["/".join(parts[:3] + parts[4:])] = json.loads(value)
        else:
            data["kv"][key] = _text(value)
    return data


def records_of(data: Any) -> dict[str, bytes]:
    """The keys and values of one object's `spec.data` (a JSON string is taken too, as Dynamo's
    own readers do); entries that do not parse are skipped."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, bytes] = {}
    for prefix, section in ((INSTANCES, "endpoints"), (MDC, "model_cards")):
        for record in (data.get(section) or {}).values():
            key = _record_key(prefix, record)
            if key is not None:
                if prefix == INSTANCES:
                    record = {k: v for k, v in record.items() if k != "type"}
                out[key] = json.dumps(record, separators=(",", ":")).encode()
    for key, value in (data.get("kv") or {}).items():
        if isinstance(key, str) and isinstance(value, (str, dict)):
            out[key] = _bytes(value)
    return out


def _record_key(prefix: str, record: Any) -> str | None:
    try:
        key = (f"{prefix}{record['namespace']}/{record['component']}/{record['endpoint']}/"
               f"{int(record['instance_id']):x}")
    except (KeyError, TypeError, ValueError):
        return None
    suffix = record.get("model_suffix")
    return f"{key}/{suffix}" if prefix == MDC and suffix else key


def _text(value: bytes) -> Any:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def _bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value.get("base64", ""))
    return str(value).encode()


# ----- the view -----------------------------------------------------------------------------

class ClusterView:
    """The discovery EndpointSlices and DynamoWorkerMetadata objects last listed or watched, and
    the records they make visible; subscribers get True on each change, False once closed."""

    def __init__(self) -> None:
        self._slices: dict[str, dict] = {}
        self._metadata: dict[str, dict] = {}
        self._visible: dict[str, bytes] = {}
        self._subscribers: set[asyncio.Queue] = set()

    def set_slices(self, objects: dict[str, dict]) -> None:
        self._slices = dict(objects)
        self._refresh()

    def set_metadata(self, objects: dict[str, dict]) -> None:
        self._metadata = dict(objects)
        self._refresh()

    def visible(self) -> dict[str, bytes]:
        return self._visible

    def ready_pods(self) -> set[str]:
        pods = set()
        for obj in self._slices.values():
            for endpoint in obj.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                ready = (endpoint.get("conditions") or {}).get("ready")
                if ref.get("kind", "Pod") == "Pod" and ref.get("name") and ready is not False:
                    pods.add(ref["name"])
        return pods

    def _refresh(self) -> None:
        ready = self.ready_pods()
        visible: dict[str, bytes] = {}
        for name, obj in self._metadata.items():
            if _pod_of(name, obj) in ready:
                visible.update(records_of((obj.get("spec") or {}).get("data")))
        if visible != self._visible:
            self._visible = visible
            for queue in self._subscribers:
                queue.put_nowait(True)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        for queue in self._subscribers:
            queue.put_nowait(False)


def _pod_of(name: str, obj: dict) -> str:
    """The pod an object belongs to: its Pod owner, else its own name (pod mode)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Pod" and ref.get("name"):
            return ref["name"]
    return name

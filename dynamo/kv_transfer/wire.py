"""Wire format of the TCP KV transfer (pull model: the decode side connects to the prefill side).

    receiver -> sender   frame(PullRequest)
    sender -> receiver   frame(PullHeader)              status "ok" | "not_found" | "busy"
                         num_chunks x (chunk prefix, chunk bytes)   only when "ok"
    receiver -> sender   frame(PullAck)                 ok=False keeps the transfer for a retry

A frame is a 4-byte big-endian length and a msgpack body. A chunk prefix is its length
(u32) and the xxh3-64 of its bytes (u64), so a corrupted chunk is detected where it lands.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec
import xxhash

MAGIC = b"DKV1"
FRAME = struct.Struct(">I")
CHUNK = struct.Struct(">IQ")
MAX_FRAME = 16 << 20  # headers carry layouts, never KV bytes
DEFAULT_CHUNK_BYTES = 4 << 20


class PullRequest(msgspec.Struct, kw_only=True):
    transfer_id: str
    wait_s: float = 0.0  # how long the sender may wait for the transfer to be staged


class PullHeader(msgspec.Struct, kw_only=True):
    status: str
    total_bytes: int = 0
    num_chunks: int = 0
    meta: dict[str, Any] = {}
    error: str | None = None


class PullAck(msgspec.Struct, kw_only=True):
    ok: bool
    error: str | None = None


class TransferError(Exception):
    """A transfer could not be completed (the caller may recompute the KV instead)."""


class TransferNotFound(TransferError):
    pass


class ChecksumError(TransferError):
    pass


def checksum(data: Any) -> int:
    return xxhash.xxh3_64_intdigest(data)


def send_frame(sock: socket.socket, msg: msgspec.Struct) -> None:
    body = msgspec.msgpack.encode(msg)
    sock.sendall(FRAME.pack(len(body)) + body)


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` from the socket (no intermediate copies)."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got)
        if n == 0:
            raise ConnectionError("peer closed the connection mid-message")
        got += n


def recv_frame(sock: socket.socket, kind: type) -> Any:
    head = bytearray(FRAME.size)
    recv_exact(sock, memoryview(head))
    (size,) = FRAME.unpack(head)
    if size > MAX_FRAME:
        raise TransferError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = bytearray(size)
    recv_exact(sock, memoryview(body))
    return msgspec.msgpack.decode(bytes(body), type=kind)


def chunk_views(segments: list[memoryview], chunk_bytes: int) -> list[memoryview]:
    """The payload cut into chunks of at most `chunk_bytes`; a chunk never spans two segments."""
    out = []
    for seg in segments:
        for start in range(0, len(seg), chunk_bytes):
            out.append(seg[start:start + chunk_bytes])
    return out


def send_chunk(sock: socket.socket, chunk: memoryview, digest: int | None = None) -> None:
    sock.sendall(CHUNK.pack(len(chunk), checksum(chunk) if digest is None else digest))
    sock.sendall(chunk)

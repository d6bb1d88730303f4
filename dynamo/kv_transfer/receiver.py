"""Receiver side: pull one staged transfer, verifying every chunk's xxh3 as it lands.

A checksum mismatch is acked as a failure (the sender keeps the transfer) and the pull
is retried on a fresh connection up to `retries` times; then `ChecksumError`.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from dynamo.kv_transfer import wire
from dynamo.runtime.tls import ClientTls


@dataclass
class Pulled:
    meta: dict[str, Any]
    data: bytearray
    seconds: float
    attempts: int

    @property
    def nbytes(self) -> int:
        return len(self.data)


def pull(host: str, port: int, transfer_id: str, wait_s: float = 10.0, timeout: float = 30.0,
         retries: int = 2, into: bytearray | None = None, tls: ClientTls | None = None) -> Pulled:
    """The bytes and metadata of `transfer_id` from the sender at host:port.

    `wait_s`: how long the sender may wait for the transfer to be staged (the prefill
    side may answer before it has staged); `timeout`: per socket operation; `into`: a
    buffer to receive into when it has exactly the announced size (saves an allocation); `tls`: pull
    over TLS, verifying the sender as the request plane verifies workers (never plaintext then)."""
    started = time.monotonic()
    last: wire.TransferError | None = None
    for attempt in range(1, retries + 2):
        try:
            meta, data = _pull_once(host, port, transfer_id, wait_s, timeout, into, tls)
            return Pulled(meta, data, time.monotonic() - started, attempt)
        except wire.ChecksumError as exc:
            last = exc
    assert last is not None
    raise last


def _pull_once(host: str, port: int, transfer_id: str, wait_s: float, timeout: float,
               into: bytearray | None, tls: ClientTls | None) -> tuple[dict[str, Any], bytearray]:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise wire.TransferError(f"cannot connect to KV sender {host}:{port}: {exc}") from exc
    try:
        if tls is not None:
            sock.settimeout(tls.handshake_timeout)
            sock = tls.context.wrap_socket(sock, server_hostname=tls.hostname(host))
        sock.settimeout(timeout + wait_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire.send_frame(sock, wire.PullRequest(transfer_id=transfer_id, wait_s=wait_s))
        header = wire.recv_frame(sock, wire.PullHeader)
        sock.settimeout(timeout)
        if header.status == "not_found":
            raise wire.TransferNotFound(header.error or transfer_id)
        if header.status != "ok":
            raise wire.TransferError(f"sender refused {transfer_id}: {header.status} {header.error or ''}")
        data = into if into is not None and len(into) == header.total_bytes else bytearray(header.total_bytes)
        bad = _recv_chunks(sock, memoryview(data), header.num_chunks)
        wire.send_frame(sock, wire.PullAck(ok=not bad, error=f"checksum mismatch in chunks {bad}" if bad else None))
        if bad:
            raise wire.ChecksumError(f"transfer {transfer_id}: checksum mismatch in chunk(s) {bad}")
        return header.meta, data
    except (OSError, ConnectionError) as exc:
        raise wire.TransferError(f"KV pull of {transfer_id} from {host}:{port} failed: {exc}") from exc
    finally:
        sock.close()


def _recv_chunks(sock: socket.socket, view: memoryview, num_chunks: int) -> list[int]:
    prefix = bytearray(wire.CHUNK.size)
    offset, bad = 0, []
    for index in range(num_chunks):
        wire.recv_exact(sock, memoryview(prefix))
        size, digest = wire.CHUNK.unpack(prefix)
        if offset + size > len(view):
            raise wire.TransferError(f"sender overran the announced size at chunk {index}")
        dest = view[offset:offset + size]
        wire.recv_exact(sock, dest)
        if wire.checksum(dest) != digest:
            bad.append(index)
        offset += size
    if offset != len(view):
        raise wire.TransferError(f"received {offset} of {len(view)} announced bytes")
    return bad

"""Sender side: stages KV bytes and serves pulls over TCP.

Threads, not asyncio: vLLM's connector API is synchronous and runs on the engine's own
thread, so staging is a plain call and serving happens on a listener thread plus one
thread per connection (capped). Each connection serves pulls one after another.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from dynamo.kv_transfer import wire
from dynamo.kv_transfer.io_threads import unpin_current_thread
from dynamo.kv_transfer.store import StagingStore
from dynamo.runtime.tls import ServerTls

log = logging.getLogger(__name__)

DEFAULT_CAP_BYTES = 1 << 30
DEFAULT_TTL_S = 60.0
MAX_WAIT_S = 60.0  # cap on how long a pull may ask us to wait for staging


class KvSender:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, cap_bytes: int = DEFAULT_CAP_BYTES,
                 ttl_s: float = DEFAULT_TTL_S, chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
                 max_connections: int = 64, tls: ServerTls | None = None) -> None:
        self.store = StagingStore(cap_bytes, ttl_s)
        self.tls = tls  # the request plane's server TLS: pulls are served over TLS only
        self.chunk_bytes = chunk_bytes
        self._conn_slots = threading.BoundedSemaphore(max_connections)
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.host, self.port = host, self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.send_seconds = 0.0
        self._thread = threading.Thread(target=self._accept_loop, name="kv-tcp-sender", daemon=True)

    def start(self) -> "KvSender":
        self._thread.start()
        return self

    def stage(self, transfer_id: str, segments: list[Any], meta: dict[str, Any] | None = None,
              owner: Any = None, timeout: float = 0.0) -> bool:
        """Hold `segments` (buffers: bytes, memoryviews, contiguous numpy arrays) for one pull."""
        views = [memoryview(s).cast("B") for s in segments]
        return self.store.put(transfer_id, views, dict(meta or {}), owner=owner, timeout=timeout)

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for conn in list(self._conns):
                _shutdown(conn)
        self.store.clear()

    def _accept_loop(self) -> None:
        unpin_current_thread()  # connection threads start from this one and inherit its CPUs
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._conn_slots.acquire(blocking=False):
                log.warning("KV sender: too many connections; refusing one")
                _shutdown(conn)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="kv-tcp-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self._handshake(conn)
            while not self._closed.is_set():
                try:
                    request = wire.recv_frame(conn, wire.PullRequest)
                except (ConnectionError, OSError):
                    return
                self._serve_pull(conn, request)
        except Exception as exc:  # a broken peer must never take the sender down
            log.debug("KV sender connection ended: %s", exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
            _shutdown(conn)
            self._conn_slots.release()

    def _handshake(self, plain: socket.socket) -> socket.socket:
        """The connection over TLS (a peer that does not complete the handshake in time is dropped)."""
        assert self.tls is not None
        plain.settimeout(self.tls.handshake_timeout)
        conn = self.tls.context.wrap_socket(plain, server_side=True)
        conn.settimeout(None)
        with self._lock:
            self._conns.discard(plain)
            self._conns.add(conn)
        return conn

    def _serve_pull(self, conn: socket.socket, request: wire.PullRequest) -> None:
        entry = self.store.checkout(request.transfer_id, min(max(request.wait_s, 0.0), MAX_WAIT_S))
        if entry is None:
            wire.send_frame(conn, wire.PullHeader(status="not_found", error=f"no transfer {request.transfer_id!r}"))
            return
        claimed = False
        try:
            started = time.monotonic()
            chunks = wire.chunk_views(entry.segments, self.chunk_bytes)
            wire.send_frame(conn, wire.PullHeader(status="ok", total_bytes=entry.nbytes, num_chunks=len(chunks),
                                                  meta=entry.meta))
            for chunk in chunks:
                wire.send_chunk(conn, chunk)
            ack = wire.recv_frame(conn, wire.PullAck)
            claimed = ack.ok
            if claimed:
                self.bytes_sent += entry.nbytes
                self.send_seconds += time.monotonic() - started
            else:
                log.warning("KV pull of %s failed at the receiver (%s); kept for a retry", entry.transfer_id, ack.error)
        finally:
            self.store.finish(entry.transfer_id, claimed)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

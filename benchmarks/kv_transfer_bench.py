"""KV transfer throughput of the TCP fallback transport on loopback, against raw socket
throughput for the same payloads in the same run.

The sending side runs in its own process in both cases (as prefill and decode workers do).
`raw`: one kept-open connection, `sendall` of the payload, `recv_into` a preallocated
buffer: the ceiling for any TCP transport on this host. `tcp-kv`: `KvSender.stage` in the
sender process, then `pull` (connect, request frame, header, chunked xxh3-checksummed
stream, ack) into a preallocated buffer: what a decode worker pays per request. Payloads
are staged as 32 segments, like per-layer KV.

    .venv/bin/python benchmarks/kv_transfer_bench.py [--sizes-mib 1,16,256] [--reps 9]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import print_table
from dynamo.kv_transfer import KvSender, pull, wire

MIB = 1 << 20


def _raw_server(listener: socket.socket, size: int, reps: int) -> None:
    payload = os.urandom(size)
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(reps + 1):
            conn.recv(1)  # "go"
            conn.sendall(payload)


def raw_seconds(size: int, reps: int) -> list[float]:
    """Seconds per transfer over one loopback connection from another process."""
    listener = socket.create_server(("127.0.0.1", 0))
    child = mp.get_context("fork").Process(target=_raw_server, args=(listener, size, reps), daemon=True)
    child.start()
    sock = socket.create_connection(listener.getsockname())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = memoryview(bytearray(size))
    times = []
    for _ in range(reps + 1):  # the first one warms up (page faults on the fresh buffer)
        started = time.perf_counter()
        sock.sendall(b"g")
        wire.recv_exact(sock, buf)
        times.append(time.perf_counter() - started)
    sock.close()
    child.join()
    listener.close()
    return times[1:]


def _kv_server(conn, size: int, reps: int, chunk_bytes: int) -> None:
    """Sender process: stages one payload (32 segments, like per-layer KV) per request."""
    sender = KvSender(cap_bytes=2 * size + MIB, chunk_bytes=chunk_bytes).start()
    view = memoryview(os.urandom(size))
    seg = max(1, size // 32)
    segments = [view[i:i + seg] for i in range(0, size, seg)]
    conn.send(sender.port)
    for _ in range(reps + 1):
        tid = conn.recv()
        sender.stage(tid, segments, {"id": tid})
        conn.send(True)
    conn.recv()
    sender.close()


def kv_seconds(size: int, reps: int, chunk_bytes: int) -> list[float]:
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_kv_server, args=(there, size, reps, chunk_bytes), daemon=True)
    child.start()
    port = here.recv()
    buf = bytearray(size)
    times = []
    for rep in range(reps + 1):
        here.send(f"t{rep}")
        here.recv()
        started = time.perf_counter()
        got = pull("127.0.0.1", port, f"t{rep}", into=buf)
        times.append(time.perf_counter() - started)
        assert got.nbytes == size
    here.send("stop")
    child.join()
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1,16,256")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--chunk-mib", type=float, default=wire.DEFAULT_CHUNK_BYTES / MIB)
    args = parser.parse_args()
    rows = []
    for size in [float(s) for s in args.sizes_mib.split(",")]:
        nbytes = int(size * MIB)
        reps = args.reps if size < 256 else max(3, args.reps // 2)
        raw = statistics.median(raw_seconds(nbytes, reps))
        kv = statistics.median(kv_seconds(nbytes, reps, int(args.chunk_mib * MIB)))
        gib = nbytes / (1 << 30)
        rows.append((f"{size:g} MiB", raw * 1e3, gib / raw, kv * 1e3, gib / kv, 100.0 * raw / kv))
    print_table(f"KV transfer on loopback (median of reps, chunk {args.chunk_mib:g} MiB, xxh3 per chunk)",
                ("payload", "raw ms", "raw GiB/s", "tcp-kv ms", "tcp-kv GiB/s", "tcp-kv % of raw"), rows)


if __name__ == "__main__":
    main()

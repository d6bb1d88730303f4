"""Small network helpers shared by the runtime, workers, deploy runner and tests."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default, where the file cannot be read
LOWEST_PICK = 10000  # below this are well-known and registered services' ports
_handed_out: set[int] = set()  # never give the same port twice in one process: it may not be bound yet


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for `bind(port 0)` and outgoing connections' local ports."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def _candidates(count: int, below: int | None) -> list[int]:
    low, high = ephemeral_range()
    top = min(below or 65535, 65535) - count + 1
    spans = [(LOWEST_PICK, min(low - count, top)), (high + 1, top)]
    return [p for lo, hi in spans if lo <= hi for p in (random.randint(lo, hi) for _ in range(100))]


def _all_bindable(host: str, first: int, count: int) -> bool:
    socks = []
    try:
        for port in range(first, first + count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1", count: int = 1, below: int | None = None) -> int:
    """First of `count` consecutive TCP ports free on `host` now, for the caller (or a child
    it starts) to bind later, possibly minutes later.

    Picked outside the kernel's ephemeral range: a port from `bind(0)` is free only until any
    process's next `bind(0)` or outgoing connection, which can be handed the very same port
    while ours waits to be bound (seen: a frontend's HTTP port taken by a worker's event
    publisher). `below` bounds the port (NVIDIA Dynamo 1.6.1 parses DYN_SYSTEM_PORT as i16)."""
    for port in _candidates(count, below):
        span = set(range(port, port + count))
        if not span & _handed_out and _all_bindable(host, port, count):
            _handed_out.update(span)
            return port
    raise RuntimeError(f"no {count} consecutive free port(s) on {host} outside the ephemeral range")

"""`free_port`: ports picked for a later bind stay clear of the kernel's own picks."""

from __future__ import annotations

import socket

import pytest

from dynamo.runtime import net


def test_ports_lie_outside_the_ephemeral_range_and_are_never_repeated():
    low, high = net.ephemeral_range()
    ports = [net.free_port() for _ in range(200)]
    assert all(not low <= p <= high for p in ports)
    assert len(set(ports)) == len(ports)


def test_a_port_from_bind_zero_is_never_picked():
    # What the kernel hands any process's bind(0) (a worker's event publisher, say) while the
    # picked port waits for its owner: the two can no longer meet.
    held = []
    try:
        for _ in range(50):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        kernel_picks = {s.getsockname()[1] for s in held}
        assert not kernel_picks & {net.free_port() for _ in range(50)}
    finally:
        for sock in held:
            sock.close()


def test_consecutive_block_is_bindable_and_below_is_respected():
    first = net.free_port(count=4, below=32767)
    assert first + 3 < 32767
    socks = [socket.socket() for _ in range(4)]
    try:
        for i, sock in enumerate(socks):
            sock.bind(("127.0.0.1", first + i))  # raises if any was taken
    finally:
        for sock in socks:
            sock.close()


def test_unreadable_range_falls_back_to_linux_default(monkeypatch, tmp_path):
    monkeypatch.setattr(net, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert net.ephemeral_range() == net.DEFAULT_EPHEMERAL
    (tmp_path / "range").write_text("40000\t50000\n")
    monkeypatch.setattr(net, "EPHEMERAL_RANGE_FILE", tmp_path / "range")
    assert net.ephemeral_range() == (40000, 50000)
    assert all(not 40000 <= net.free_port() <= 50000 for _ in range(50))


def test_no_room_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(net, "ephemeral_range", lambda: (net.LOWEST_PICK, 65535))
    with pytest.raises(RuntimeError, match="no 1 consecutive free port"):
        net.free_port()

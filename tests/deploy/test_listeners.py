"""The sockets `run` holds for its frontends (`deploy/listeners.py`): the service's socket and each replica's
own are bound when first needed, kept while a replica `run` holds needs them (so a replica in backoff keeps its
port), and released once none does (a removed service or one scaled to 0 refuses connections again)."""

from __future__ import annotations

import socket

import pytest

from dynamo.deploy.listeners import Listeners
from dynamo.deploy.plan import Launch
from dynamo.runtime.net import free_port


def frontend(shared: int, own: int, host: str = "127.0.0.1") -> Launch:
    return Launch(argv=["python", "-m", "dynamo.frontend"], env={}, cwd=".", http_port=own, shared_port=shared,
                  listen_host=host)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_replicas_sockets_are_held_across_its_restarts_and_released_when_no_replica_needs_them():
    listeners = Listeners()
    shared, own = free_port(), free_port()
    launch = frontend(shared, own)
    try:
        first = listeners.spawn("Frontend", 0, launch)
        # a restart (the replica in backoff meanwhile: its own port stays bound here, no other process takes it)
        listeners.keep([("Frontend", 0, launch)])
        assert listeners.spawn("Frontend", 0, launch).pass_fds == first.pass_fds
        assert not refused(shared) and not refused(own)
        # another apply moves the socket: a new one beside the old, which goes with the last replica using it
        moved = frontend(free_port(), free_port(), "127.0.0.2")
        listeners.spawn("Frontend", 1, moved)
        listeners.keep([("Frontend", 1, moved)])
        assert refused(shared) and refused(own)
        assert len(listeners.held) == 2
        listeners.keep([])  # removed, or scaled to 0: its port refuses connections instead of queueing them
        assert listeners.held == {}
    finally:
        listeners.close()


def test_a_port_taken_by_another_process_is_an_oserror_at_spawn():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    listeners = Listeners()
    try:
        with pytest.raises(OSError, match="cannot listen"):
            listeners.spawn("Frontend", 0, frontend(taken.getsockname()[1], free_port()))
    finally:
        listeners.close()
        taken.close()

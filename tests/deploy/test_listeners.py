"""The sockets `run` holds for its frontends (`deploy/listeners.py`): the service's socket is bound when first
needed, kept while a replica `run` holds needs it (so connections wait for a replica in backoff), and released once
none does (a removed service or one scaled to 0 refuses connections again). A replica's own socket refuses
connections while no process serves it (a peer reads a refusal as "that replica is gone"): `run` lets go of it
when the replica's process exits, binds the same port at the restart, and a fresh one if another process took it."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest
import yaml

from dynamo.deploy.listeners import Listeners, OwnPortTaken, own_key
from dynamo.deploy.plan import Launch, RunOptions, build_plans
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import validate_file
from dynamo.runtime.net import free_port
from tests.deploy.manifests import one_service_graph


def frontend(shared: int, own: int, host: str = "127.0.0.1") -> Launch:
    return Launch(argv=["python", "-m", "dynamo.frontend"], env={}, cwd=".", http_port=own, shared_port=shared,
                  listen_host=host)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_services_socket_is_held_across_a_restart_and_released_when_no_replica_needs_it():
    listeners = Listeners()
    shared, own = free_port(), free_port()
    launch = frontend(shared, own)
    try:
        first = listeners.spawn("Frontend", 0, launch)
        # a restart: the replica in backoff meanwhile, its own port refuses (no process serves it), the service's
        # socket queues connections for the next replica
        listeners.release_own("Frontend", 0)
        listeners.keep([("Frontend", 0, launch)])
        assert refused(own) and not refused(shared)
        again = listeners.spawn("Frontend", 0, launch)  # the same port of its own, bound again
        assert again.pass_fds[0] == first.pass_fds[0] and own_key("Frontend", 0, launch) in listeners.held
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


def test_a_replicas_own_port_taken_while_it_was_down_is_own_port_taken():
    listeners = Listeners()
    shared, own = free_port(), free_port()
    launch = frontend(shared, own)
    taken = socket.socket()
    try:
        listeners.spawn("Frontend", 0, launch)
        listeners.release_own("Frontend", 0)
        taken.bind(("127.0.0.1", own))
        taken.listen()
        with pytest.raises(OwnPortTaken):
            listeners.spawn("Frontend", 0, launch)
        assert not refused(shared)  # the service's socket is still held
    finally:
        listeners.close()
        taken.close()


@pytest.mark.e2e  # starts processes (the replica, the supervisor's guard)
@pytest.mark.timeout(60)
async def test_a_crashed_frontend_replicas_own_port_refuses_in_backoff_and_moves_if_taken(tmp_path):
    """A replica on its service's socket that exits: during its backoff its own port refuses connections (the
    shared one queues them); another process takes that port meanwhile, and the restart gets a fresh one (the
    launch its probes and status read says so)."""
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(one_service_graph("crashing", ["sleep", "600"])))
    (graph,) = validate_file(path).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"))
    plans = build_plans(graph, opts, {}, devices=[])
    plan = plans["Worker"]
    shared = free_port()
    plan.ports[0] = (free_port(), None)
    # a frontend-like replica (its sockets handed down as to a frontend) that exits at once
    plan.launch = lambda index: Launch(argv=[sys.executable, "-c", "import time; time.sleep(0.2)"], env={},
                                       cwd=str(tmp_path), http_port=plan.ports[index][0], shared_port=shared,
                                       listen_host="127.0.0.1")
    sup = Supervisor(plans, out=open("/dev/null", "w"), grace=2.0)
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    taken = socket.socket()
    try:
        async def until(predicate, timeout=20.0):
            end = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < end, "timed out"
                await asyncio.sleep(0.01)

        await until(lambda: ("Worker", 0) in sup.replicas and sup.replicas["Worker", 0].state == "backoff")
        first = sup.replicas["Worker", 0].launch.http_port
        assert await asyncio.to_thread(refused, first)
        assert not await asyncio.to_thread(refused, shared)
        taken.bind(("127.0.0.1", first))
        taken.listen()
        await until(lambda: sup.replicas["Worker", 0].restarts >= 1)
        moved = sup.replicas["Worker", 0].launch.http_port
        assert moved != first and plan.ports[0][0] == moved
    finally:
        stop.set()
        await runner
        taken.close()

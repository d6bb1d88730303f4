"""The listening sockets `run` owns for its frontends, and how a replica inherits them.

A frontend service listens on one fixed port (`--frontend-port`). `run` binds it once, when the service's first
replica starts, and holds it for the run's life; every replica of the service (the first, a crash restart, a
scale-up, a rollout's new one) inherits it with a socket of its own, by systemd's socket-activation convention:
`LISTEN_FDS=2`, `LISTEN_FDNAMES=http:replica`, fds 3 and 4, `LISTEN_PID` set by the exec wrapper
(`listen_exec.py`). The replicas share the one kernel listen queue, so a new replica serves beside the old one
and an old one that stops accepting leaves its next connections to the others: the frontend can surge like any
service. Between replicas (a crash restart) connections wait in the queue instead of being refused. The socket
of its own (`launch.http_port`) is where the probes, a Prometheus and the other replicas reach that very
replica, so it must refuse connections while no process serves it (`frontend/replicas.py` reads a refusal as
"that replica is gone"): `run` closes its copy when the replica's process exits or its retirement begins
(`release_own`) and binds the same port again at the restart; should another process have taken the port
meanwhile, that is `OwnPortTaken` and the supervisor gives the replica a fresh port.

A socket is keyed by what it listens on (service, address, port: an apply that moves the frontend's address
binds a new one; `rollout_steps.strategy_for` recreates such a frontend, so the old socket is released first),
and released once no replica `run` holds needs it (`keep`): a removed service's port, or one scaled to 0,
refuses connections again instead of queueing them for nobody; a scale-up binds it again.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from typing import Iterable

from dynamo.deploy.plan import Launch

WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "listen_exec.py")
BACKLOG = 2048  # uvicorn's default: the queue every replica of the service takes connections from
NAMES = "http:replica"  # the service's socket, then the replica's own (LISTEN_FDNAMES)


@dataclass
class Spawn:
    """How one replica is started with its sockets: argv through the wrapper, env, the fds it inherits."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]  # held by `Listeners` (this process keeps its copies until `keep` drops them)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (SO_REUSEADDR: a port whose last connections linger in TIME_WAIT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class OwnPortTaken(OSError):
    """A replica's own port, free when it was picked, is held by another process now: pick another."""


Key = tuple  # (service, host, port) of a service's socket; (service, index, host, port) of a replica's own


def shared_key(service: str, launch: Launch) -> Key:
    return (service, launch.listen_host, launch.shared_port)


def own_key(service: str, index: int, launch: Launch) -> Key:
    return (service, index, launch.listen_host, launch.http_port)


class Listeners:
    """The frontend services' sockets of one supervisor, and their replicas' own: bound when first needed, kept
    while a replica needs them (`keep`; a replica's own only while its process runs, `release_own`), closed when
    the run ends."""

    def __init__(self) -> None:
        self.held: dict[Key, socket.socket] = {}

    def spawn(self, service: str, index: int, launch: Launch) -> Spawn:
        """What starts `launch`: as it is, or, for a frontend given its service's socket (`launch.shared_port`),
        through the wrapper with that socket and one of its own. OSError: a port cannot be bound."""
        if launch.shared_port is None or launch.http_port is None:
            # A frontend of the service that binds its port itself (an apply switched it to a shell command or
            # KServe, recreating it: the old replicas are gone): the port is its to bind now.
            self._drop(lambda key: key[0] == service)
            return Spawn(launch.argv, launch.env, ())
        shared = self._socket(shared_key(service, launch))
        try:
            own = self._socket(own_key(service, index, launch))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OwnPortTaken(exc.errno, str(exc)) from None
            raise
        fds = (shared.fileno(), own.fileno())
        argv = [sys.executable, "-I", "-S", WRAPPER, *map(str, fds), "--", *launch.argv]
        return Spawn(argv, {**launch.env, "LISTEN_FDNAMES": NAMES}, fds)

    def _socket(self, key: Key) -> socket.socket:
        sock = self.held.get(key)
        if sock is None:
            sock = self.held[key] = bind(key[-2], key[-1])
        return sock

    def release_own(self, service: str, index: int) -> None:
        """Close `run`'s copy of replica `index`'s own socket (its process exited, or it is being retired): with no
        process left holding it the port refuses connections, as a stopped replica's should. The service's socket
        is kept."""
        self._drop(lambda key: len(key) == 4 and key[0] == service and key[1] == index)

    def keep(self, replicas: Iterable[tuple[str, int, Launch]]) -> None:
        """Release every socket none of `replicas` (service, index, launch: those `run` still holds, running,
        in backoff or draining) listens on."""
        wanted: set[Key] = set()
        for service, index, launch in replicas:
            if launch.shared_port is not None and launch.http_port is not None:
                wanted |= {shared_key(service, launch), own_key(service, index, launch)}
        self._drop(lambda key: key not in wanted)

    def _drop(self, which) -> None:
        for key in [k for k in self.held if which(k)]:
            self.held.pop(key).close()

    def close(self) -> None:
        self._drop(lambda key: True)

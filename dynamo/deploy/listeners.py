"""The listening sockets `run` owns for its frontends, and how a replica inherits them.

A frontend service listens on one fixed port (`--frontend-port`). `run` binds it once, when the service's first
replica starts, and holds it for the run's life; every replica of the service (the first, a crash restart, a
scale-up, a rollout's new one) inherits it with a socket of its own, by systemd's socket-activation convention:
`LISTEN_FDS=2`, `LISTEN_FDNAMES=http:replica`, fds 3 and 4, `LISTEN_PID` set by the exec wrapper
(`listen_exec.py`). The replicas share the one kernel listen queue, so a new replica serves beside the old one
and an old one that stops accepting leaves its next connections to the others: the frontend can surge like any
service. Between replicas (a crash restart) connections wait in the queue instead of being refused. The socket
of its own (`launch.http_port`, stable across restarts) is where the probes, a Prometheus and the other
replicas reach that very replica; `run` binds it at each start and keeps no copy of it.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

from dynamo.deploy.plan import Launch

WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "listen_exec.py")
BACKLOG = 2048  # uvicorn's default: the queue every replica of the service takes connections from
NAMES = "http:replica"  # the service's socket, then the replica's own (LISTEN_FDNAMES)


@dataclass
class Spawn:
    """How one replica is started with its sockets: argv through the wrapper, env, the fds it inherits; `close`
    `own` in this process once it has started (the replica holds it)."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    own: socket.socket | None = None

    def close(self) -> None:
        if self.own is not None:
            self.own.close()


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


class Listeners:
    """The frontend services' sockets of one supervisor: bound once per service, closed when the run ends."""

    def __init__(self) -> None:
        self.shared: dict[str, socket.socket] = {}

    def spawn(self, service: str, launch: Launch) -> Spawn:
        """What starts `launch`: as it is, or, for a frontend given its service's socket (`launch.shared_port`),
        through the wrapper with that socket and one of its own. OSError: a port cannot be bound."""
        if launch.shared_port is None or launch.http_port is None:
            # A frontend of the service that binds its port itself (an apply switched it to a shell command or
            # KServe, recreating it: the old replicas are gone): the port is its to bind now.
            self.release(service)
            return Spawn(launch.argv, launch.env, ())
        sock = self.shared.get(service)
        if sock is None:
            sock = self.shared[service] = bind(launch.listen_host, launch.shared_port)
        own = bind(launch.listen_host, launch.http_port)
        fds = (sock.fileno(), own.fileno())
        argv = [sys.executable, "-I", "-S", WRAPPER, *map(str, fds), "--", *launch.argv]
        return Spawn(argv, {**launch.env, "LISTEN_FDNAMES": NAMES}, fds, own)

    def release(self, service: str) -> None:
        sock = self.shared.pop(service, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for service in list(self.shared):
            self.release(service)

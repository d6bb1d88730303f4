"""Listening sockets handed down by the process that started this one, by systemd's socket-activation
convention (sd_listen_fds(3)): `LISTEN_FDS=N` sockets at file descriptors 3 .. 3+N-1, `LISTEN_PID` the pid
they are meant for, `LISTEN_FDNAMES` their names, colon-separated. This module owns reading that convention;
the values come from the component's typed config (env-only settings, as systemd sets them).

As sd_listen_fds does, the sockets are taken only when LISTEN_PID is this process's pid (a child that
inherits the environment, a shell's pipeline, must not take them) and they are made close-on-exec (this
process's own children do not inherit them); once taken, the variables are unset (sd_listen_fds(1)), so no
child reads them as its own. `python -m dynamo.deploy run` hands a frontend replica its
service's listening socket, and one of its own, this way (`dynamo/deploy/listeners.py`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

SD_LISTEN_FDS_START = 3
ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class Inherited:
    name: str  # its LISTEN_FDNAMES entry ("unknown" without one, as systemd names it)
    sock: socket.socket

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]


def inherited_sockets(count: int | None, pid: int | None, names: str | None) -> list[Inherited]:
    """The sockets LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES describe; none unless they are meant for this
    process. ValueError for a descriptor that is not a listening stream socket (a wrong LISTEN_FDS)."""
    if not count or count < 0 or pid != os.getpid():
        return []
    labels = names.split(":") if names else []
    found = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)  # family and type read from the descriptor
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise ValueError(f"LISTEN_FDS: file descriptor {fd} is not a listening stream socket")
        found.append(Inherited(labels[i] if i < len(labels) and labels[i] else "unknown", sock))
    for name in ENV:
        os.environ.pop(name, None)
    return found

"""The exec wrapper `run` starts a frontend replica through when it hands it listening sockets (`listeners.py`),
by systemd's socket-activation convention (sd_listen_fds(3)): the sockets moved to file descriptors 3, 4, ...
and `LISTEN_PID` set to this process's own pid, which the frontend keeps when this execs it. A parent cannot
set LISTEN_PID in a child's environment itself (it knows the pid only once the child exists), nor can
subprocess place a descriptor at a given number; a wrapper that execs does both, as systemd does between its
fork and exec.

    python -I -S listen_exec.py FD [FD ...] -- ARGV...

Runs as a script with nothing but the standard library's os and fcntl: no import path, no start-up cost."""

import fcntl
import os
import sys

# `runtime/listen_fds.py`'s constant, repeated: this script runs isolated (-I -S) and imports nothing of ours.
SD_LISTEN_FDS_START = 3


def place(fds: list[int]) -> None:
    """Move `fds` to 3, 4, ... in order. Each is parked above that range first, so that moving one into place
    never overwrites another that is still to move."""
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, SD_LISTEN_FDS_START + len(fds)) for fd in fds]
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(parked):
        os.dup2(fd, SD_LISTEN_FDS_START + i)  # inheritable: the exec'd program gets it
        os.close(fd)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    fds, command = [int(fd) for fd in argv[:split]], argv[split + 1:]
    place(fds)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the pid: it is the program's
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

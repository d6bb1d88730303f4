"""systemd's socket-activation convention as the frontend reads it (`runtime/listen_fds.py`) and as `run`'s exec
wrapper sets it up (`deploy/listen_exec.py`): sockets at fds 3.. in the order given, LISTEN_PID the pid of the
program the wrapper execs, names from LISTEN_FDNAMES; a process they are not meant for takes none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dynamo.deploy.listeners import WRAPPER, bind
from dynamo.runtime.listen_fds import inherited_sockets
from tests.fixtures.procs import REPO

# What a program the wrapper execs finds, read as the frontend reads it (its config's env-only settings).
REPORT = ("import json, os; from dynamo.runtime.listen_fds import inherited_sockets as f; "
          "env = os.environ.get; found = f(int(env('LISTEN_FDS') or 0), int(env('LISTEN_PID') or 0), "
          "env('LISTEN_FDNAMES')); "
          "print(json.dumps([[s.name, s.port, s.sock.fileno(), s.sock.get_inheritable()] for s in found]"
          " + [sorted(k for k in os.environ if k.startswith('LISTEN_'))]))")


def test_sockets_not_meant_for_this_process_are_not_taken():
    assert inherited_sockets(None, os.getpid(), None) == []
    assert inherited_sockets(2, None, "http:replica") == []  # systemd: no LISTEN_PID, no sockets
    assert inherited_sockets(2, os.getpid() + 1, "http:replica") == []


def _through_wrapper(socks, *command: str) -> list:
    fds = [s.fileno() for s in socks]
    out = subprocess.run([sys.executable, "-I", "-S", WRAPPER, *map(str, fds), "--", *command], pass_fds=fds,
                         capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "LISTEN_FDNAMES": "http:replica"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.e2e
def test_the_wrapper_hands_the_sockets_to_the_program_it_execs_in_order():
    first, second = bind("127.0.0.1", 0), bind("127.0.0.1", 0)
    try:
        # the second one first: whatever their numbers here, they arrive at 3 and 4 in the order given
        found = _through_wrapper([second, first], sys.executable, "-c", REPORT)
        # taken, the variables are unset (sd_listen_fds(1)): a child of the program does not read them as its own
        assert found == [["http", second.getsockname()[1], 3, False], ["replica", first.getsockname()[1], 4, False],
                         []]
        # a shell's child is not the pid LISTEN_PID names: it takes none, as sd_listen_fds(3) (`; true`: a shell
        # execs a lone command itself)
        assert _through_wrapper([first], "sh", "-c", f'"{sys.executable}" -c "$0"; true', REPORT) == [
            ["LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID"]]
    finally:
        first.close()
        second.close()

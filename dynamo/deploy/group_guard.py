"""The replicas' process groups outlive no `run`: a guard process stops them when `run` dies
without shutting down (SIGKILL, the OOM killer, a crash).

PR_SET_PDEATHSIG (set in each replica before exec) reaches only the replica's direct child.
A manifest command such as `sh -c "python3 -m dynamo.vllm ... 2>&1 | tee /tmp/worker.log"`
(the form the deployment guides use) would lose only its shell: the engine and `tee`, in the
same process group, would run on and hold the GPU.

`run` starts one guard, in a session of its own so that a terminal's Ctrl-C does not reach
it, and writes `+PGID` / `-PGID` lines to its stdin as replicas start and end. The pipe
closes when `run` exits, however it exits; the guard then SIGTERMs every group still listed,
SIGKILLs what is left after a grace period, and exits. After a clean shutdown the list is
empty and it exits at once.

`run`'s temporary directories (`--remove DIR`: its state dir, the pods' private `/tmp`s) would
outlive a `run` that cannot clean up after itself: unless `run` said it leaves in order (a `.`
line before it closes the pipe, then it removes them itself), the guard removes them once the
groups are gone.

    python -m dynamo.deploy.group_guard [--grace SECONDS] [--remove DIR ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class GroupGuard:
    """`run`'s end of the guard: start it, tell it which groups to stop, close it."""

    def __init__(self, grace: float, leftovers: tuple[str, ...] = ()) -> None:
        self.grace = grace
        self.leftovers = leftovers  # directories to remove if `run` dies
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        removes = [arg for path in self.leftovers for arg in ("--remove", path)]
        self._proc = subprocess.Popen([sys.executable, "-m", "dynamo.deploy.group_guard", "--grace", str(self.grace),
                                       *removes], stdin=subprocess.PIPE, start_new_session=True, text=True)

    def add(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):  # the guard died: nothing left to tell
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()

    def close(self) -> None:
        """Closing the pipe is what `run`'s death does too; with no group listed it exits at once."""
        if self._proc is None:
            return
        self._send(".")  # an orderly exit: `run` removes its directories itself
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(self.grace + 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def signal_group(pgid: int, sig: int) -> bool:
    """Whether the group still had members to signal."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def live_groups(groups: set[int]) -> set[int]:
    """The groups with a member that still runs. A zombie counts as gone: `killpg(g, 0)` still
    succeeds on a group whose members have all exited but are not yet reaped (their parent is
    busy, or is no reaping init), and waiting on it would cost the whole grace period."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)"
        except OSError:  # the process ended meanwhile
            continue
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) in groups:
            found.add(int(fields[2]))
    return found


def stop_groups(groups: set[int], grace: float) -> None:
    alive = {g for g in groups if signal_group(g, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = live_groups(alive)
    for group in alive:
        signal_group(group, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamo.deploy.group_guard", description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--remove", action="append", default=[], metavar="DIR",
                        help="a directory to remove unless `run` leaves in order (repeatable)")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe's end may end the guard
    groups: set[int] = set()
    orderly = False
    for line in sys.stdin:  # until `run` closes the pipe or dies
        line = line.strip()
        if line[:1] in ("+", "-") and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
        orderly = line == "."
    stop_groups(groups, args.grace)
    if not orderly:
        for path in args.remove:
            shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The guard's stop sequence (dynamo/deploy/group_guard.py) against real process groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dynamo.deploy.group_guard import live_groups, stop_groups

pytestmark = pytest.mark.e2e

# A member that ignores SIGTERM: only the SIGKILL after the grace ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"


def test_a_group_left_as_zombies_is_not_waited_for():
    """The member exits on SIGTERM but nobody reaps it yet (this process is its parent and does
    not wait): killpg(g, 0) still succeeds, yet the guard must not wait out its 60 s grace."""
    member = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        assert live_groups({member.pid}) == {member.pid}
        started = time.monotonic()
        stop_groups({member.pid}, grace=60)
        assert time.monotonic() - started < 30
        os.killpg(member.pid, 0)  # the zombie is still there: the guard saw it as gone
        assert live_groups({member.pid}) == set()
    finally:
        member.kill()
        member.wait(10)


def test_a_member_that_ignores_sigterm_is_killed_after_the_grace():
    member = subprocess.Popen([sys.executable, "-c", STUBBORN], start_new_session=True, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert member.stdout is not None and member.stdout.readline().strip() == "ready"
        stop_groups({member.pid}, grace=1)
        assert member.wait(30) == -signal.SIGKILL
    finally:
        member.kill()
        member.wait(10)

"""Admission's start-up gate (`--router-min-initial-workers`) and its drain wait."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from dynamo.frontend.admission import STARTING_RETRY_AFTER_SECS, Admission, InitialWorkers
from dynamo.frontend.metrics import FrontendMetrics


def test_initial_workers_gate_opens_at_the_count_and_stays_open():
    up = [0]
    gate = InitialWorkers(2, lambda: up[0])
    assert not gate.check() and "0 up so far" in gate.waiting_message()
    up[0] = 1
    refusal = gate.refusal()
    assert not gate.check()
    assert (refusal.status, refusal.code, refusal.retry_after) == (503, "no_workers", STARTING_RETRY_AFTER_SECS)
    assert "waiting for 2 initial worker(s)" in refusal.message and "1 up so far" in refusal.message
    up[0] = 2
    assert gate.check()
    up[0] = 0  # a scale-down later is not a start-up: no gate again
    assert gate.check()


def test_no_minimum_is_open_from_the_start():
    assert InitialWorkers(0, lambda: 0).check()


def _admission() -> Admission:
    return Admission(SimpleNamespace(), FrontendMetrics())  # type: ignore[arg-type]  # no model is looked up


async def test_drained_waits_for_the_last_request():
    admission = _admission()
    admission.admit("m")
    asyncio.get_running_loop().call_later(0.05, admission.release, "m")
    assert await admission.drained(10)


@pytest.mark.parametrize("timeout", [10.0, float("inf")])
async def test_drained_stops_waiting_when_told(timeout):
    admission, now = _admission(), asyncio.Event()
    admission.admit("m")
    asyncio.get_running_loop().call_later(0.05, now.set)
    started = time.monotonic()
    assert not await admission.drained(timeout, unless=now)
    assert time.monotonic() - started < 5

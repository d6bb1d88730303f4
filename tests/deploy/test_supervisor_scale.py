"""Scaling a running graph: a scale-up gives way to a newer scale request or a stop between starts (it
does not run to the end first), a scaled-down replica gets its pod's termination grace to drain (not
`--grace`) without holding up the rest, and a request beyond run's replica limit is refused by the
supervisor and the control endpoint (400). The replicas are real processes (`sleep`, or a Python that
ignores SIGTERM), supervised in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
import yaml

from dynamo.deploy.control import ControlServer
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.supervisor import MAX_REPLICAS, Supervisor
from dynamo.deploy.validate import validate_file
from tests.deploy.helpers import group_members, pid_alive
from tests.deploy.manifests import one_service_graph

pytestmark = pytest.mark.timeout(120)

SLEEPERS = one_service_graph("sleepers", ["sleep", "600"])


def stubborn(**pod) -> dict:
    """Draining forever: SIGTERM is ignored, so only the SIGKILL at the end of a grace period stops it."""
    return one_service_graph("sleepers", ["python3", "-c"], pod=pod, args=[
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])


def write_sleepers(tmp_path: Path, doc: dict = SLEEPERS) -> Path:
    path = tmp_path / "sleepers.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def supervisor(tmp_path: Path, doc: dict = SLEEPERS, grace: float = 2.0) -> Supervisor:
    (graph,) = validate_file(write_sleepers(tmp_path, doc)).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"))
    return Supervisor(build_plans(graph, opts, {}, devices=[]), out=open("/dev/null", "w"), grace=grace)


async def watch_pids(sup: Supervisor, seen: set[int], done: asyncio.Event) -> None:
    """Every replica process the supervisor starts (it yields after each start, so none is missed)."""
    while not done.is_set():
        seen |= {rep.pid for rep in sup.replicas.values() if rep.pid}
        await asyncio.sleep(0)


async def until(predicate, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def assert_all_gone(pids: set[int]) -> None:
    alive = [p for p in pids if pid_alive(p)] + group_members(pids)
    assert alive == [], f"replica processes left running: {alive}"


@contextlib.asynccontextmanager
async def running(sup: Supervisor) -> AsyncIterator[tuple[asyncio.Task, asyncio.Event, set[int]]]:
    """The supervisor running, with every replica process it starts recorded; stopped and awaited after."""
    stop, done, seen = asyncio.Event(), asyncio.Event(), set()
    runner = asyncio.create_task(sup.run(stop))
    watcher = asyncio.create_task(watch_pids(sup, seen, done))
    try:
        await until(lambda: len(seen) == 1)
        yield runner, stop, seen
    finally:
        stop.set()
        await runner
        done.set()
        await watcher


@pytest.mark.e2e
async def test_a_newer_scale_request_ends_a_scale_up_between_starts(tmp_path):
    sup = supervisor(tmp_path)
    async with running(sup) as (_, _, seen):
        sup.scale("Worker", MAX_REPLICAS)
        await until(lambda: len(seen) >= 3)
        sup.scale("Worker", 0)  # before the scale-up is through
        await until(lambda: not sup.replicas)
        assert len(seen) < MAX_REPLICAS // 2, f"the scale-up went on after the scale to 0: {len(seen)} started"
        assert_all_gone(seen)
    assert_all_gone(seen)


@pytest.mark.e2e
async def test_stop_ends_a_scale_up_promptly_and_reaps_every_replica(tmp_path):
    sup = supervisor(tmp_path)
    async with running(sup) as (runner, stop, seen):
        sup.scale("Worker", MAX_REPLICAS)
        await until(lambda: len(seen) >= 3)
        stop.set()  # what SIGTERM / Ctrl-C does in `run`
        began = time.monotonic()
        await asyncio.wait_for(asyncio.shield(runner), 15)
        assert time.monotonic() - began < 10
        assert len(seen) < MAX_REPLICAS // 2, f"the scale-up went on after stop: {len(seen)} started"
    assert_all_gone(seen)


@pytest.mark.e2e
async def test_a_scaled_down_replica_drains_for_its_pods_grace_not_runs(tmp_path):
    """`--grace` is 1 s here; the pod's terminationGracePeriodSeconds is the operator's 60 (the manifest sets
    none). A retired replica that is still draining (it ignores SIGTERM) is not killed after 1 s, the graph
    keeps working meanwhile (the other replica is restarted when it dies), and a stop still ends it within
    --grace."""
    sup = supervisor(tmp_path, stubborn(), grace=1.0)
    sup.plans["Worker"].replicas = 2
    async with running(sup) as (runner, stop, seen):
        await until(lambda: len(seen) == 2)
        retired, kept = sup.replicas[("Worker", 1)], sup.replicas[("Worker", 0)]
        sup.scale("Worker", 1)
        await asyncio.sleep(4)  # well past --grace
        assert retired.state == "stopping" and pid_alive(retired.pid), "retired after --grace, not the pod's 60 s"
        os.kill(kept.pid, signal.SIGKILL)  # the run loop is not held up by the drain: the kept one comes back
        await until(lambda: sup.replicas[("Worker", 0)].restarts == 1 and sup.replicas[("Worker", 0)].pid)
        stop.set()
        began = time.monotonic()
        await asyncio.wait_for(asyncio.shield(runner), 30)
        assert time.monotonic() - began < 15, "the stop waited for the drain instead of --grace"
    assert_all_gone(seen)


@pytest.mark.e2e
async def test_a_scaled_down_replica_is_killed_after_the_manifests_grace(tmp_path):
    sup = supervisor(tmp_path, stubborn(terminationGracePeriodSeconds=3), grace=30.0)
    sup.plans["Worker"].replicas = 2
    async with running(sup) as (_, _, seen):
        await until(lambda: len(seen) == 2)
        retired = sup.replicas[("Worker", 1)]
        began = time.monotonic()
        sup.scale("Worker", 1)
        await until(lambda: ("Worker", 1) not in sup.replicas, 30)
        took = time.monotonic() - began
        assert 2.5 <= took < 20 and not pid_alive(retired.pid), took
    assert_all_gone(seen)


def test_the_supervisor_refuses_replicas_beyond_its_limit(tmp_path):
    sup = supervisor(tmp_path)
    for bad in (MAX_REPLICAS + 1, 100000, -1):
        with pytest.raises(ValueError, match="Worker: replicas"):
            sup.scale("Worker", bad)
    assert sup.plans["Worker"].replicas == 1
    sup.scale("Worker", MAX_REPLICAS)  # the limit itself is accepted (nothing runs: no reconcile here)
    assert sup.plans["Worker"].replicas == MAX_REPLICAS


async def test_an_unknown_service_is_a_404_listing_the_graphs_services(tmp_path):
    sup = supervisor(tmp_path)
    control = ControlServer(sup, "sleepers")
    port = await control.start()
    try:
        for name in ("Nope", "worker"):  # a case mismatch too
            status, body = await asyncio.to_thread(post_scale, port, {"service": name, "replicas": 1})
            assert status == 404 and body["error"] == f"no service {name!r} (have Worker; names are case-sensitive)"
    finally:
        await control.stop()


async def test_the_control_endpoint_answers_400_beyond_the_limit(tmp_path):
    sup = supervisor(tmp_path)
    control = ControlServer(sup, "sleepers")
    port = await control.start()
    try:
        status, body = await asyncio.to_thread(post_scale, port, {"service": "Worker", "replicas": 100000})
        assert status == 400 and f"limit of {MAX_REPLICAS}" in body["error"], body
        assert sup.plans["Worker"].replicas == 1
        status, body = await asyncio.to_thread(post_scale, port, {"service": "Worker", "replicas": 2})
        assert status == 200 and body["services"] == {"Worker": 2}
    finally:
        await control.stop()


def post_scale(port: int, payload: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/scale", data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)

"""`local_restart.py`: the operator's restart order and decisions (pure), then, with real `sleep` replicas under a
supervisor driven by an Applier: a new `spec.restart.id` restarts the services one at a time in `order`, a
stall fails the rest, a later apply supersedes a sequence in progress (its task cancelled, nothing orphaned), a
worker's changed spec supersedes the restart, and a Parallel restart rolls every service at once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from dynamo.deploy.local_restart import (COMPLETED, FAILED, RESTARTING, SUPERSEDED, RestartStatus, decide,
                                         parallel_progress, restart_order)
from dynamo.deploy.local_rollout import Applier, fingerprint
from dynamo.deploy.supervisor import Supervisor
from tests.deploy.helpers import stop_and_assert_reaped
from tests.deploy.test_local_rollout import plans_of, until

pytestmark = pytest.mark.timeout(120)
PROBE = {"exec": {"command": ["true"]}, "periodSeconds": 1}


def trio(rid: str | None = "1", strategy: dict | None = None, ready: dict | None = None,
         component: str = "main", seconds: dict | None = None) -> dict:
    """Services A, B, C (one `sleep` replica each, of `component` type); `ready`: a readiness probe per service."""
    def svc(name: str) -> dict:
        return {"componentType": component, "replicas": 1, "livenessProbe": PROBE,
                "readinessProbe": (ready or {}).get(name, PROBE),
                "extraPodSpec": {"terminationGracePeriodSeconds": 2, "mainContainer": {
                    "image": "local", "startupProbe": PROBE,  # `sleep` serves no health route
                    "command": ["sleep", str((seconds or {}).get(name, 600))]}}}
    spec: dict = {"services": {name: svc(name) for name in "ABC"}}
    if rid is not None:
        spec["restart"] = {"id": rid, **({"strategy": strategy} if strategy else {})}
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": "trio"},
            "spec": spec}


def graph_of(doc: dict, tmp_path: Path, name: str = "g"):
    return plans_of(doc, tmp_path, name)[0]


# ----- pure logic --------------------------------------------------------------------------------

def test_the_order_is_the_given_one_else_alphabetical(tmp_path):
    doc = trio()
    doc["spec"]["services"] = {n: doc["spec"]["services"]["A"] for n in ("zeta", "Alpha", "beta")}
    assert restart_order(graph_of(doc, tmp_path)) == ["Alpha", "beta", "zeta"]  # Go's sort.Strings: bytewise
    assert restart_order(graph_of(trio(strategy={"order": ["C", "A", "B"]}), tmp_path)) == ["C", "A", "B"]


def test_what_an_apply_does_about_its_restart(tmp_path):
    done = RestartStatus("1", COMPLETED)
    assert decide(done, graph_of(trio(None), tmp_path), []) == "none"  # no spec.restart
    assert decide(done, graph_of(trio("1"), tmp_path), []) == "none"  # already processed
    assert decide(RestartStatus("1", FAILED), graph_of(trio("1"), tmp_path), []) == "none"
    assert decide(done, graph_of(trio("2"), tmp_path), []) == "sequential"  # the default
    assert decide(done, graph_of(trio("2", {"type": "Sequential"}), tmp_path), []) == "sequential"
    assert decide(done, graph_of(trio("2", {"type": "Parallel"}), tmp_path), []) == "parallel"
    assert decide(None, graph_of(trio("2"), tmp_path), []) == "sequential"  # spec.restart added
    assert decide(RestartStatus("2", RESTARTING), graph_of(trio("2"), tmp_path), []) == "sequential"  # goes on
    assert decide(done, graph_of(trio("2"), tmp_path), ["B"]) == "superseded"  # a worker's managed rolling update
    assert decide(done, graph_of(trio("1"), tmp_path), ["B"]) == "none"  # a processed id: nothing to supersede


def test_a_parallel_restart_completes_when_every_rollout_does_and_fails_on_a_stall():
    status = RestartStatus("2", RESTARTING, ["A", "B"], 2, parallel=True)
    assert parallel_progress(status, {"A": "complete", "B": "progressing"}).in_progress == ["B"]
    assert parallel_progress(status, {"A": "complete", "B": "complete"}).phase == COMPLETED
    failed = parallel_progress(status, {"A": "complete", "B": "stalled"})
    assert failed.phase == FAILED and "B" in failed.message and failed.info()["inProgress"] == []


def test_the_restart_id_is_not_part_of_the_fingerprint(tmp_path):
    _, a = plans_of(trio("1"), tmp_path, "a")
    _, b = plans_of(trio("2"), tmp_path, "b")
    _, c = plans_of(trio("1", seconds={"A": 601}), tmp_path, "c")
    assert fingerprint(a["A"]) == fingerprint(b["A"]) != fingerprint(c["A"])


# ----- with real replicas ------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running(tmp_path: Path, doc: dict):
    graph, plans = plans_of(doc, tmp_path, "start")
    sup = Supervisor(plans, out=open("/dev/null", "w"), grace=2.0)
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    seen: set[int] = set()
    try:
        await until(lambda: sum(r.state == "ready" for r in sup.replicas.values()) == 3)
        yield sup, Applier(sup, graph), seen
    finally:
        await stop_and_assert_reaped(sup, stop, runner, seen, timeout=30)


def pids(sup: Supervisor) -> dict[str, set[int]]:
    return {name: {r.pid for r in sup.active(name)} for name in "ABC"}


async def watch(sup: Supervisor, applier: Applier, seen: set[int], log: list) -> None:
    """Record, in order, each service whose pids change and the restart's inProgress; at no moment may two
    services be mid-rollout (replicas of two plans) in a sequential restart."""
    first = pids(sup)
    while True:
        now = pids(sup)
        seen |= {p for ps in now.values() for p in ps if p}
        for name in "ABC":
            if now[name] - first[name] and name not in [e for e in log if isinstance(e, str)]:
                log.append(name)
        mixed = [n for n in "ABC" if len({id(r.plan) for r in sup.active(n)}) > 1]
        assert len(mixed) <= 1, f"two services restarting at once: {mixed}"
        state = applier.status().get("restart", {})
        entry = (state.get("phase"), tuple(state.get("inProgress", ())))
        if not any(e == entry for e in log if isinstance(e, tuple)):
            log.append(entry)
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_a_new_id_restarts_the_services_one_at_a_time_in_order(tmp_path):
    async with running(tmp_path, trio("1", {"order": ["C", "A", "B"]})) as (sup, applier, seen):
        assert applier.status()["restart"] == {"observedID": "1", "phase": COMPLETED, "inProgress": [],
                                               "generation": 1}  # the first run restarts nothing
        log: list = []
        watcher = asyncio.create_task(watch(sup, applier, seen, log))
        graph, plans = plans_of(trio("2", {"order": ["C", "A", "B"]}), tmp_path, "new")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert done["replaced"] == {} and sorted(done["unchanged"]) == ["A", "B", "C"]
        assert done["restart"]["phase"] == RESTARTING and done["restart"]["order"] == ["C", "A", "B"]
        await until(lambda: applier.status()["restart"]["phase"] == COMPLETED, 60)
        await asyncio.sleep(0.2)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        assert [e for e in log if isinstance(e, str)] == ["C", "A", "B"]
        progress = [e[1] for e in log if isinstance(e, tuple) and e[0] == RESTARTING]
        assert progress == [("C",), ("A",), ("B",)]
        assert applier.status()["done"] and applier.restarts.sequence is not None
        assert applier.restarts.sequence.task.done()
        before = pids(sup)
        again = applier.apply(graph, plans, set(), None, deadline=30)  # the same id again: nothing restarts
        assert "restart" not in again and applier.status()["restart"]["phase"] == COMPLETED
        await asyncio.sleep(1.5)
        assert pids(sup) == before


@pytest.mark.e2e
async def test_a_stall_fails_the_sequence_and_the_rest_is_not_restarted(tmp_path):
    flag = tmp_path / "broken"
    unready = {"B": {"exec": {"command": ["sh", "-c", f"test ! -e {flag}"]}, "periodSeconds": 1}}
    async with running(tmp_path, trio("1", ready=unready)) as (sup, applier, seen):
        before = pids(sup)
        flag.write_text("")  # B's replicas, old and new, are unready from now on: its rollout cannot progress
        graph, plans = plans_of(trio("2", ready=unready), tmp_path, "new")
        applier.apply(graph, plans, set(), None, deadline=6)
        await until(lambda: applier.status()["restart"]["phase"] == FAILED, 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        restart = applier.status()["restart"]
        assert "B stalled" in restart["message"] and "not restarted: C" in restart["message"]
        assert applier.rollouts["B"].state == "stalled" and "C" not in applier.rollouts
        now = pids(sup)
        assert now["A"] != before["A"] and now["C"] == before["C"]


@pytest.mark.e2e
async def test_a_later_apply_supersedes_a_sequence_in_progress(tmp_path):
    slow = {"A": {**PROBE, "initialDelaySeconds": 4}}  # A's new replica takes a while to be ready
    async with running(tmp_path, trio("1", ready=slow)) as (sup, applier, seen):
        graph, plans = plans_of(trio("2", ready=slow), tmp_path, "two")
        applier.apply(graph, plans, set(), None, deadline=30)
        first = applier.restarts.sequence
        await until(lambda: len(sup.active("A")) == 2)  # A is restarting
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        graph, plans = plans_of(trio("3", ready=slow), tmp_path, "three")
        applier.apply(graph, plans, set(), None, deadline=30)
        await asyncio.sleep(0)
        assert first.task.cancelled() or first.task.done()
        assert applier.status()["restart"]["observedID"] == "3"
        await until(lambda: applier.status()["restart"]["phase"] == COMPLETED, 90)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        assert {n: p.restart_id for n, p in sup.plans.items()} == {"A": "3", "B": "3", "C": "3"}
        assert first.task.cancelled() and first.task not in sup.owned
        assert first.status.phase == RESTARTING  # its status was left as it was: the new one is reported


@pytest.mark.e2e
async def test_a_workers_changed_spec_supersedes_the_restart(tmp_path):
    async with running(tmp_path, trio("1", component="worker")) as (sup, applier, seen):
        before = pids(sup)
        graph, plans = plans_of(trio("2", component="worker", seconds={"B": 601}), tmp_path, "new")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert done["restart"]["phase"] == SUPERSEDED and list(done["replaced"]) == ["B"]
        assert applier.restarts.sequence is None and "B" in applier.status()["restart"]["message"]
        await until(lambda: applier.status()["done"], 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        now = pids(sup)
        assert now["A"] == before["A"] and now["C"] == before["C"] and now["B"] != before["B"]


@pytest.mark.e2e
async def test_a_parallel_restart_rolls_every_service_at_once(tmp_path):
    async with running(tmp_path, trio("1", {"type": "Parallel"})) as (sup, applier, seen):
        before = pids(sup)
        graph, plans = plans_of(trio("2", {"type": "Parallel"}), tmp_path, "new")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert sorted(done["replaced"]) == ["A", "B", "C"] and done["restart"]["inProgress"] == ["A", "B", "C"]
        await until(lambda: applier.status()["restart"]["phase"] == COMPLETED, 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        now = pids(sup)
        assert all(now[n] != before[n] for n in "ABC")

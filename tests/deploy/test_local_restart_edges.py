"""`local_restart.py`'s edges: the sequence's own decisions with stand-in rollouts (pure), then, with real `sleep`
replicas under a supervisor driven by an Applier: the id a service's pods carry falls back with a stalled rollout
(so the same id applied again restarts it), a finished Parallel restart is Completed before anything reads the
status, a worker's rollout still progressing from an earlier apply supersedes a new id, a changed spec in the same
apply is rolled twice under Sequential, an added service is not restarted, a crash of the sequence fails it, and
stopping the run mid-sequence cancels it (Failed, nothing started afterwards, nothing orphaned)."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

import pytest

from dynamo.deploy.local_restart import (CANCELLED, COMPLETED, FAILED, RESTARTING, SUPERSEDED, RestartStatus,
                                         SequentialRestart, parallel_progress, walk)
from dynamo.deploy.local_rollout import fingerprint
from dynamo.deploy.supervisor import Supervisor
from tests.deploy.test_local_restart import PROBE, pids, running, trio
from tests.deploy.test_local_rollout import plans_of, until

pytestmark = pytest.mark.timeout(120)


def unready_b(flag) -> dict:
    return {"B": {"exec": {"command": ["sh", "-c", f"test ! -e {flag}"]}, "periodSeconds": 1}}


def carried(sup: Supervisor) -> dict[str, str | None]:
    return {name: plan.restart_id for name, plan in sup.plans.items()}


# ----- pure ----------------------------------------------------------------------------------------

def sequence(order: list[str], carrying: set[str], start, halted: bool = False,
             progressing: dict | None = None) -> SequentialRestart:
    return SequentialRestart(RestartStatus("2", RESTARTING, [], 2), order, start,
                             lambda n: (progressing or {}).get(n), lambda n: n in carrying, lambda: halted)


def test_the_first_service_reported_is_the_first_that_does_not_carry_the_id():
    assert sequence(["A", "B", "C"], {"A"}, lambda n: None).next_up() == ["B"]
    assert sequence(["A", "B"], {"A", "B"}, lambda n: None).next_up() == []
    busy = SimpleNamespace(state="progressing")
    assert sequence(["A", "B"], {"A"}, lambda n: None, progressing={"A": busy}).next_up() == ["A"]


async def test_a_sequence_whose_turn_finds_the_run_stopping_fails_cancelled_not_completed():
    seq = sequence(["A", "B"], set(), lambda n: None, halted=True)
    await walk(seq)
    assert seq.status.phase == FAILED and seq.status.message == CANCELLED


async def test_a_sequence_whose_rollout_the_stop_cancelled_fails_cancelled():
    async def ended():
        return None
    ro = SimpleNamespace(state="cancelled", task=asyncio.create_task(ended()))
    seq = sequence(["A", "B"], set(), lambda n: ro)
    await walk(seq)
    assert seq.status.phase == FAILED and seq.status.message == CANCELLED


def test_a_parallel_restart_the_stop_cancelled_fails():
    status = RestartStatus("2", RESTARTING, ["A", "B"], 2, parallel=True)
    out = parallel_progress(status, {"A": "complete", "B": "cancelled"})
    assert out.phase == FAILED and out.message == CANCELLED


# ----- with real replicas ------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("strategy", [None, {"type": "Parallel"}])
async def test_a_stalled_restart_falls_back_to_the_old_id_and_the_same_id_restarts_it(tmp_path, strategy):
    flag = tmp_path / "broken"
    unready = unready_b(flag)
    async with running(tmp_path, trio("1", strategy, ready=unready)) as (sup, applier, seen):
        flag.write_text("")  # B's replicas are unready from now on: its restart's rollout cannot progress
        graph, plans = plans_of(trio("2", strategy, ready=unready), tmp_path, "two")
        applier.apply(graph, plans, set(), None, deadline=6)
        await until(lambda: "B" in applier.rollouts and applier.rollouts["B"].plan.restart_id == "2", 60)
        graph, plans = plans_of(trio(None, strategy, ready=unready), tmp_path, "none")
        applier.apply(graph, plans, set(), None, deadline=6)  # spec.restart gone: the restart is dropped
        assert "restart" not in applier.status()
        await until(lambda: applier.rollouts["B"].state == "stalled", 60)
        assert carried(sup)["B"] == "1"  # fell back to the old plan, and to its id with it
        flag.unlink()
        await until(lambda: sup.active("B") and all(r.state == "ready" for r in sup.active("B")), 30)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        before = pids(sup)
        graph, plans = plans_of(trio("2", strategy, ready=unready), tmp_path, "again")
        applier.apply(graph, plans, set(), None, deadline=30)
        await until(lambda: applier.status()["restart"]["phase"] != RESTARTING, 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        assert applier.status()["restart"]["phase"] == COMPLETED
        assert pids(sup)["B"] != before["B"] and carried(sup) == {"A": "2", "B": "2", "C": "2"}


@pytest.mark.e2e
async def test_a_finished_parallel_restart_is_completed_before_anyone_reads_the_status(tmp_path):
    par = {"type": "Parallel"}
    async with running(tmp_path, trio("1", par, component="worker")) as (sup, applier, seen):
        graph, plans = plans_of(trio("2", par, component="worker"), tmp_path, "two")
        applier.apply(graph, plans, set(), None, deadline=30)
        tasks = [ro.task for ro in applier.rollouts.values()]
        await until(lambda: all(t.done() for t in tasks), 60)  # status() is not called meanwhile
        await asyncio.sleep(0.1)
        assert applier.restarts.status.phase == COMPLETED
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        graph, plans = plans_of(trio("2", par, component="worker", seconds={"B": 601}), tmp_path, "two-b")
        done = applier.apply(graph, plans, set(), None, deadline=30)  # the same id: nothing to supersede
        assert "restart" not in done and list(done["replaced"]) == ["B"]
        assert applier.status()["restart"] == {"observedID": "2", "phase": COMPLETED, "inProgress": [],
                                               "generation": 2}
        await until(lambda: applier.status()["done"], 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}


@pytest.mark.e2e
async def test_a_workers_rollout_still_progressing_from_an_earlier_apply_supersedes_a_new_id(tmp_path):
    slow = {"A": {**PROBE, "initialDelaySeconds": 5}}
    async with running(tmp_path, trio("1", ready=slow, component="worker")) as (sup, applier, seen):
        changed = trio("1", ready=slow, component="worker", seconds={"A": 601})
        graph, plans = plans_of(changed, tmp_path, "respec")
        applier.apply(graph, plans, set(), None, deadline=30)  # A's rolling update, no restart
        assert applier.rollouts["A"].state == "progressing"
        changed["spec"]["restart"]["id"] = "2"  # the same spec, a new id, while A still rolls
        graph, plans = plans_of(changed, tmp_path, "two")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert done["replaced"] == {} and done["restart"]["phase"] == SUPERSEDED, done
        assert "A" in done["restart"]["message"] and applier.restarts.sequence is None
        await until(lambda: applier.status()["done"], 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p}
        assert carried(sup) == {"A": "1", "B": "1", "C": "1"}  # nothing restarted for it


@pytest.mark.e2e
async def test_a_service_changed_in_the_same_apply_is_rolled_twice_under_sequential(tmp_path):
    async with running(tmp_path, trio("1")) as (sup, applier, seen):
        first = pids(sup)["B"]
        seen_b: set[int] = set()
        graph, plans = plans_of(trio("2", seconds={"B": 601}), tmp_path, "two")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert list(done["replaced"]) == ["B"] and done["restart"]["phase"] == RESTARTING

        def finished() -> bool:
            seen_b.update(pids(sup)["B"])
            return applier.status()["restart"]["phase"] != RESTARTING
        await until(finished, 60)
        seen |= seen_b | {p for ps in pids(sup).values() for p in ps if p}
        assert applier.status()["restart"]["phase"] == COMPLETED
        assert len(seen_b - first) >= 2, seen_b  # the change's replica, then its turn's
        assert fingerprint(sup.plans["B"]) == fingerprint(plans["B"]) and carried(sup)["B"] == "2"


@pytest.mark.e2e
async def test_a_service_added_in_the_same_apply_is_born_with_the_id_and_not_restarted(tmp_path):
    async with running(tmp_path, trio("1")) as (sup, applier, seen):
        doc = trio("2")
        doc["spec"]["services"]["D"] = copy.deepcopy(doc["spec"]["services"]["A"])
        graph, plans = plans_of(doc, tmp_path, "two")
        done = applier.apply(graph, plans, set(), None, deadline=30)
        assert done["added"] == ["D"] and done["restart"]["order"] == ["A", "B", "C", "D"]
        await until(lambda: len(sup.active("D")) == 1 and sup.active("D")[0].state == "ready", 30)
        d = {r.pid for r in sup.active("D")}
        await until(lambda: applier.status()["restart"]["phase"] == COMPLETED, 60)
        seen |= {p for ps in pids(sup).values() for p in ps if p} | d
        assert {r.pid for r in sup.active("D")} == d and "D" not in applier.rollouts
        # Completed: every service carries the id (the operator then stamps it on all of them)
        assert carried(sup) == {"A": "2", "B": "2", "C": "2", "D": "2"}


@pytest.mark.e2e
async def test_a_crash_of_the_sequence_fails_the_restart(tmp_path):
    async with running(tmp_path, trio("1")) as (sup, applier, seen):
        def broken(*args):
            raise RuntimeError("boom")
        applier.restarts._restart_one = broken
        graph, plans = plans_of(trio("2"), tmp_path, "two")
        applier.apply(graph, plans, set(), None, deadline=30)
        task = applier.restarts.sequence.task
        await until(lambda: applier.status()["restart"]["phase"] == FAILED, 10)
        assert "RuntimeError: boom" in applier.status()["restart"]["message"]
        assert task.done() and task not in sup.owned and not applier.status()["restart"]["inProgress"]


@pytest.mark.e2e
async def test_stopping_the_run_mid_sequence_cancels_it_and_starts_nothing_more(tmp_path):
    slow = {"A": {**PROBE, "initialDelaySeconds": 4}}
    async with running(tmp_path, trio("1", ready=slow)) as (sup, applier, seen):  # stopped on leaving it
        graph, plans = plans_of(trio("2", ready=slow), tmp_path, "two")
        applier.apply(graph, plans, set(), None, deadline=30)
        task = applier.restarts.sequence.task
        await until(lambda: len(sup.active("A")) == 2)  # A is restarting, B and C wait their turn
        seen |= {p for ps in pids(sup).values() for p in ps if p}
    await asyncio.sleep(0.1)
    assert task.cancelled() and task not in sup.owned
    restart = applier.status()["restart"]
    assert restart["phase"] == FAILED and restart["message"] == CANCELLED and restart["inProgress"] == []
    later = [r for r in sup.replicas.values() if r.service in ("B", "C") and r.plan is not None
             and r.plan.generation != 1]
    assert later == [] and applier.rollouts["A"].state == "cancelled"

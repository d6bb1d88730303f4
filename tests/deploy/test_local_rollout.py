"""`local_rollout.py`: the pure arithmetic (Kubernetes' rounding of maxSurge / maxUnavailable, one
Deployment-controller step, a whole rolling update simulated to its end), the diff's fingerprint and the
refusals; then, with real `sleep` replicas under a supervisor, what an apply does to the replicas: an
old replica that dies mid-rollout comes back from its own (old) plan, an autoscaled service keeps its
count, and a later apply supersedes a rollout in progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import yaml

from dynamo.deploy.local_rollout import Applier, Strategy, fingerprint, refusal, scaled_value, step, strategy_for
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import validate_file
from tests.deploy.helpers import stop_and_assert_reaped

pytestmark = pytest.mark.timeout(120)


def sleepers(replicas: int = 2, seconds: int = 600, annotations: dict | None = None, ready: bool = True) -> dict:
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 1}  # `sleep` serves no health route
    worker = {"componentType": "worker", "replicas": replicas, "livenessProbe": probe,
              "readinessProbe": probe if ready else {"exec": {"command": ["false"]}, "periodSeconds": 1},
              "extraPodSpec": {"terminationGracePeriodSeconds": 2, "mainContainer": {
                  "image": "local", "command": ["sleep", str(seconds)], "startupProbe": probe}}}
    if annotations:
        worker["annotations"] = annotations
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": "sleepers"},
            "spec": {"services": {"Worker": worker}}}


def plans_of(doc: dict, tmp_path: Path, name: str = "graph"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    (graph,) = validate_file(path).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"))
    return graph, build_plans(graph, opts, {}, devices=[])


# ----- pure logic --------------------------------------------------------------------------------

@pytest.mark.parametrize("value,replicas,up,want", [
    ("25%", 2, True, 1), ("25%", 2, False, 0), ("25%", 4, True, 1), ("25%", 10, True, 3), ("25%", 10, False, 2),
    (None, 1, True, 1), (None, 1, False, 0), (2, 5, True, 2), ("0%", 8, True, 0),
])
def test_percentages_round_as_kubernetes_rounds_them(value, replicas, up, want):
    assert scaled_value(value, replicas, "25%", up) == want


def test_the_strategy_of_a_service(tmp_path):
    _, plans = plans_of(sleepers(2), tmp_path)
    assert strategy_for(plans["Worker"], 2) == Strategy("RollingUpdate", 1, 0)
    _, plans = plans_of(sleepers(4, annotations={"nvidia.com/deployment-rolling-update-max-surge": "0",
                                                 "nvidia.com/deployment-rolling-update-max-unavailable": "50%"}),
                        tmp_path)
    assert strategy_for(plans["Worker"], 4) == Strategy("RollingUpdate", 0, 2)
    _, plans = plans_of(sleepers(annotations={"nvidia.com/deployment-strategy": "Recreate"}), tmp_path)
    assert strategy_for(plans["Worker"], 2).kind == "Recreate"


def simulate(target: int, strat: Strategy, old: int) -> tuple[int, int]:
    """A whole rolling update, new replicas ready one step after they start: (steps, fewest ready seen)."""
    old_ready, new, new_ready, fewest = old, 0, 0, old
    for steps in range(1, 100):
        start, retire = step(target, strat, old, old_ready, new, new_ready)
        assert old + new + start <= target + strat.max_surge
        old, old_ready = old - retire, old_ready - retire
        fewest = min(fewest, old_ready + new_ready)
        new_ready, new = new, new + start  # what started last step is ready now
        if old == 0 and new_ready == target:
            return steps, fewest
    raise AssertionError("the rollout never finished")


@pytest.mark.parametrize("target,surge,unavailable", [(1, 1, 0), (2, 1, 0), (4, 1, 1), (10, 3, 2), (3, 0, 1)])
def test_a_rolling_update_keeps_its_bounds_and_finishes(target, surge, unavailable):
    _, fewest = simulate(target, Strategy("RollingUpdate", surge, unavailable), target)
    assert fewest >= target - unavailable


def test_nothing_old_is_retired_before_a_new_one_is_ready_at_zero_unavailable():
    strat = Strategy("RollingUpdate", 1, 0)
    assert step(2, strat, 2, 2, 0, 0) == (1, 0)
    assert step(2, strat, 2, 2, 1, 0) == (0, 0)
    assert step(2, strat, 2, 2, 1, 1) == (0, 1)
    assert step(2, strat, 2, 1, 1, 0) == (0, 0)  # the surge is spent and nothing would stay ready
    assert step(2, strat, 2, 1, 1, 1) == (0, 1)  # the unready old one: retiring it costs no availability


def test_the_fingerprint_ignores_the_count_and_sees_the_pod_template(tmp_path):
    _, a = plans_of(sleepers(2), tmp_path)
    _, b = plans_of(sleepers(5), tmp_path)
    _, c = plans_of(sleepers(2, seconds=601), tmp_path)
    assert fingerprint(a["Worker"]) == fingerprint(b["Worker"]) != fingerprint(c["Worker"])


def test_graph_wide_changes_are_refused_by_name(tmp_path):
    old, old_plans = plans_of(sleepers(), tmp_path)
    doc = sleepers()
    doc["metadata"]["name"] = "renamed"
    new, new_plans = plans_of(doc, tmp_path)
    assert refusal(old, new, old_plans, new_plans, None).field == "metadata.name"
    doc = sleepers()
    doc["metadata"]["namespace"] = "elsewhere"
    new, new_plans = plans_of(doc, tmp_path)
    assert refusal(old, new, old_plans, new_plans, None).field == "metadata.namespace"
    doc = sleepers()
    doc["spec"]["services"]["Worker"]["dynamoNamespace"] = "other"
    new, new_plans = plans_of(doc, tmp_path)
    assert refusal(old, new, old_plans, new_plans, None).field == "spec.services.Worker.dynamoNamespace"
    new, new_plans = plans_of(sleepers(3, seconds=5), tmp_path)
    assert refusal(old, new, old_plans, new_plans, None) is None


# ----- with real replicas ------------------------------------------------------------------------

async def until(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, doc: dict):
    graph, plans = plans_of(doc, tmp_path)
    sup = Supervisor(plans, out=open("/dev/null", "w"), grace=2.0)
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    seen: set[int] = set()
    try:
        await until(lambda: len([r for r in sup.replicas.values() if r.state == "ready"]) == plans["Worker"].replicas)
        yield sup, Applier(sup, graph), seen
    finally:
        await stop_and_assert_reaped(sup, stop, runner, seen, timeout=30)


def argv_of(sup: Supervisor) -> dict[int, list[str]]:
    return {r.index: r.launch.argv for r in sup.active("Worker")}


@pytest.mark.e2e
async def test_an_old_replica_dying_mid_rollout_restarts_from_its_old_plan(tmp_path):
    async with running(tmp_path, sleepers(2)) as (sup, applier, seen):
        old = {r.index: r.pid for r in sup.active("Worker")}
        graph, plans = plans_of(sleepers(2, seconds=601, ready=False), tmp_path, "new")
        applier.apply(graph, plans, set(), None, deadline=60)  # the new replica never gets ready: it stays in progress
        await until(lambda: len(sup.active("Worker")) == 3)
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        victim = sup.replicas[("Worker", 0)]
        victim.proc.kill()
        await until(lambda: sup.replicas[("Worker", 0)].pid not in (None, old[0])
                    and sup.replicas[("Worker", 0)].state == "ready")
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        assert sup.replicas[("Worker", 0)].launch.argv[-1] == "600"  # its own plan, not the rollout's
        assert sup.replicas[("Worker", 2)].launch.argv[-1] == "601"
        assert applier.status()["services"]["Worker"]["state"] == "progressing"
    assert applier.rollouts["Worker"].state == "cancelled"  # stopped by the shutdown, not superseded


@pytest.mark.e2e
async def test_an_autoscaled_count_is_kept_and_a_later_apply_supersedes(tmp_path):
    async with running(tmp_path, sleepers(2)) as (sup, applier, seen):
        sup.scale("Worker", 3)  # what the autoscaler decided
        await until(lambda: len([r for r in sup.active("Worker") if r.state == "ready"]) == 3)
        graph, plans = plans_of(sleepers(1, seconds=601, ready=False), tmp_path, "stuck")
        done = applier.apply(graph, plans, {"Worker"}, None, deadline=60)
        assert sup.plans["Worker"].replicas == 3 and "autoscaler" in done["notes"][0]
        stuck = applier.rollouts["Worker"]
        await until(lambda: len(sup.active("Worker")) == 4)  # one surged, never ready
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        graph, plans = plans_of(sleepers(1, seconds=602), tmp_path, "fixed")
        applier.apply(graph, plans, {"Worker"}, None, deadline=60)
        await until(lambda: stuck.state == "superseded")
        await until(lambda: applier.status()["services"]["Worker"]["state"] == "complete", 60)
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        assert sorted(a[-1] for a in argv_of(sup).values()) == ["602"] * 3


@pytest.mark.e2e
async def test_a_scale_mid_rollout_sets_the_rollouts_target(tmp_path):
    """One owner of the count: /scale (or an autoscaler) during a rollout changes the target it steps to."""
    async with running(tmp_path, sleepers(2)) as (sup, applier, seen):
        graph, plans = plans_of(sleepers(2, seconds=601, ready=False), tmp_path, "new")
        applier.apply(graph, plans, set(), None, deadline=60)
        await until(lambda: len(sup.active("Worker")) == 3)  # two old, one surged (never ready)
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        sup.scale("Worker", 1)
        await until(lambda: sorted(a[-1] for a in argv_of(sup).values()) == ["600", "601"])
        assert sup.plans["Worker"] is plans["Worker"] and applier.rollouts["Worker"].state == "progressing"

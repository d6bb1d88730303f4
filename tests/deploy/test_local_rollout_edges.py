"""The edges of replicas coming and going that an apply exposes, each a regression test of a review's finding:
a replica retired while it is still being spawned is stopped, not left running untracked; a rollout's
maxSurge / maxUnavailable follow its target when that is scaled mid-rollout; a new frontend or GPU replica
waits for its service's drainer instead of taking a number that lacks --frontend-port or shares a busy GPU;
an apply's plans never rewrite the ConfigMap files running replicas read, and only a mounted ConfigMap is
part of a service's fingerprint; a stall is over once its old spec is applied again; the `apply` CLI judges
only the services its apply touched; an apply that fails midway, or comes while the run stops, changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from pathlib import Path

import pytest
import yaml

from dynamo.deploy import config_maps, local_rollout
from dynamo.deploy.control import _state, _waiting
from dynamo.deploy.devices import DeviceLedger
from dynamo.deploy.local_rollout import Applier, Halted, Rollout, Strategy, fingerprint, step
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import load_documents, validate_file
from tests.deploy.helpers import stop_and_assert_reaped
from tests.deploy.test_local_rollout import plans_of, sleepers, until

pytestmark = pytest.mark.timeout(120)
STUBBORN = ["sh", "-c", "trap '' TERM; sleep 300"]  # drains for its whole grace


def graph_doc(service: str, component: str, replicas: int, grace: int = 4, gpus: int = 0) -> dict:
    svc = {"componentType": component, "replicas": replicas,
           "extraPodSpec": {"terminationGracePeriodSeconds": grace,
                            "mainContainer": {"image": "local", "command": STUBBORN}}}
    if gpus:
        svc["resources"] = {"limits": {"gpu": str(gpus)}}
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": "edges"},
            "spec": {"services": {service: svc}}}


def build(doc: dict, tmp_path: Path, devices: list[str] | None = None, port: int = 28431):
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    (graph,) = validate_file(path).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"), frontend_port=port)
    return graph, build_plans(graph, opts, {}, devices=devices or [])


@contextlib.asynccontextmanager
async def supervised(plans):
    sup = Supervisor(plans, out=open(os.devnull, "w"), grace=1.0)
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    seen: set[int] = set()
    try:
        yield sup, seen
    finally:
        await stop_and_assert_reaped(sup, stop, runner, seen, timeout=60)


# ----- 1: retired mid-spawn ----------------------------------------------------------------------

@pytest.mark.e2e
async def test_a_replica_retired_while_it_spawns_is_stopped_not_orphaned(tmp_path):
    _, plans = plans_of(sleepers(0), tmp_path)
    sup = Supervisor(plans, out=open(os.devnull, "w"), grace=2.0)
    adding = asyncio.create_task(sup.add(plans["Worker"]))
    end = time.monotonic() + 10
    while not sup.replicas:  # one turn of the loop at a time: the spawn is still awaited when it is mapped
        assert time.monotonic() < end, "the replica was never mapped"
        await asyncio.sleep(0)
    (rep,) = sup.replicas.values()
    assert rep.proc is None  # still being spawned
    sup.retire(rep)
    await asyncio.wait_for(adding, 30)
    try:
        await until(lambda: not sup.replicas and not sup._retiring, 30)
        assert rep.proc is not None and rep.proc.returncode is not None, "the replica's process is still running"
    finally:
        if rep.proc is not None and rep.proc.returncode is None:
            rep.proc.kill()
            await rep.proc.wait()
        await sup.shutdown()


# ----- 2: the strategy follows the target --------------------------------------------------------

def test_a_rollouts_strategy_is_resolved_against_its_target_as_it_is_now(tmp_path):
    _, plans = plans_of(sleepers(4), tmp_path)
    ro = Rollout("Worker", plans["Worker"], None, 2, 60.0)
    assert ro.strategy == Strategy("RollingUpdate", 1, 1)  # 25% of 4
    plans["Worker"].replicas = 1  # /scale, an autoscaler or the planner, mid-rollout
    assert ro.strategy == Strategy("RollingUpdate", 1, 0)  # 25% of 1: as Kubernetes resolves it at its next sync
    start, retire = step(1, ro.strategy, old=4, old_ready=4, new=1, new_ready=0)
    assert 4 - retire >= 1, "every ready old replica retired with no new one ready"
    assert ro.info()["max_unavailable"] == 0


# ----- 3: a draining frontend / GPU replica holds its number -------------------------------------

async def drained(sup: Supervisor, drainer, never: tuple[str, int], timeout: float = 30) -> None:
    """Until `drainer` is gone, checking at every turn that no replica took number `never` meanwhile."""
    end = time.monotonic() + timeout
    while sup.replicas.get((drainer.service, drainer.index)) is drainer:
        assert never not in sup.replicas, f"{never} started while {drainer.name} drains"
        assert time.monotonic() < end, "the drainer never went"
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_a_frontend_scaled_back_up_waits_for_its_drainer_and_keeps_the_port(tmp_path):
    _, plans = build(graph_doc("Frontend", "frontend", 1), tmp_path)
    async with supervised(plans) as (sup, seen):
        await until(lambda: sup.replicas.get(("Frontend", 0)) is not None and sup.replicas[("Frontend", 0)].pid)
        first = sup.replicas[("Frontend", 0)]
        seen.add(first.pid)
        sup.scale("Frontend", 0)
        await until(lambda: first.stopping)
        sup.scale("Frontend", 1)
        await drained(sup, first, ("Frontend", 1))  # its 4 s grace: many reconcile turns
        await until(lambda: (sup.replicas.get(("Frontend", 0)) not in (None, first)), 30)
        again = sup.replicas[("Frontend", 0)]
        seen |= {again.pid} - {None}
        assert again.launch.http_port == 28431 and ("Frontend", 1) not in sup.replicas


@pytest.mark.e2e
async def test_a_gpu_replica_scaled_back_up_waits_for_its_drainers_device(tmp_path):
    _, plans = build(graph_doc("Worker", "worker", 2, gpus=1), tmp_path, devices=["0", "1"])
    async with supervised(plans) as (sup, seen):
        await until(lambda: len([r for r in sup.replicas.values() if r.pid]) == 2)
        seen |= {r.pid for r in sup.replicas.values()}
        drainer = sup.replicas[("Worker", 1)]
        sup.scale("Worker", 1)
        await until(lambda: drainer.stopping)
        sup.scale("Worker", 2)
        await drained(sup, drainer, ("Worker", 2))  # a third replica would share a GPU still in use
        await until(lambda: sup.replicas.get(("Worker", 1)) not in (None, drainer), 30)
        seen |= {sup.replicas[("Worker", 1)].pid} - {None}
        devices = {r.index: r.launch.env.get("CUDA_VISIBLE_DEVICES") for r in sup.replicas.values()}
        assert devices == {0: "0", 1: "1"}


def test_an_applys_plans_claim_no_devices_until_a_replica_launches(tmp_path):
    """An apply's plans may be refused (409 / 400): claiming devices for them would leak the slots."""
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(graph_doc("Worker", "worker", 2, gpus=1)))
    (graph,) = validate_file(path).graphs
    ledger = DeviceLedger(["0", "1"])
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"))
    plans = build_plans(graph, opts, {}, ledger=ledger, claim=False)
    assert ledger.held == {} and ledger.free() == 2
    assert plans["Worker"].launch(1).env["CUDA_VISIBLE_DEVICES"] == "0"  # claimed at launch
    assert ledger.free() == 1


# ----- 4, 6: ConfigMaps --------------------------------------------------------------------------

CM_FILE = """apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a.txt: "%s"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
data: {b.txt: "%s"}
---
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata: {name: cm}
spec:
  services:
    Frontend:
      componentType: frontend
      extraPodSpec: {mainContainer: {image: l, command: [sleep, "300"]}}
    Worker:
      componentType: worker
      extraPodSpec:
        volumes: [{name: v, configMap: {name: cfg}}]
        mainContainer: {image: l, command: [sleep, "300"], volumeMounts: [{name: v, mountPath: /etc/cfg}]}
"""


def cm_plans(tmp_path: Path, mounted: str, unmounted: str):
    path = tmp_path / f"g-{mounted}-{unmounted}.yaml"
    path.write_text(CM_FILE % (mounted, unmounted))
    (graph,) = validate_file(path).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), pods_dir=str(tmp_path / "pods"),
                      config_maps=config_maps.collect(load_documents(path)))
    return build_plans(graph, opts, {}, devices=[])


def test_an_applys_plans_never_rewrite_what_running_replicas_read(tmp_path):
    old = cm_plans(tmp_path, "v1", "x")
    seen_by_old = Path(old["Worker"].mounts["/etc/cfg"]) / "a.txt"
    assert seen_by_old.read_text() == "v1"
    new = cm_plans(tmp_path, "v2", "x")  # an apply's plans (refused or not)
    assert seen_by_old.read_text() == "v1"
    assert (Path(new["Worker"].mounts["/etc/cfg"]) / "a.txt").read_text() == "v2"
    assert cm_plans(tmp_path, "v1", "y")["Worker"].mounts == old["Worker"].mounts  # the same content: one directory


def test_only_a_mounted_configmap_is_part_of_the_fingerprint(tmp_path):
    base, other, changed = cm_plans(tmp_path, "v1", "x"), cm_plans(tmp_path, "v1", "y"), cm_plans(tmp_path, "v2", "x")
    assert fingerprint(base["Frontend"]) == fingerprint(other["Frontend"]) == fingerprint(changed["Frontend"])
    assert fingerprint(base["Worker"]) == fingerprint(other["Worker"]) != fingerprint(changed["Worker"])


# ----- 7, 8: a stall and the CLI's judgment ------------------------------------------------------

@pytest.mark.e2e
async def test_applying_the_old_spec_again_ends_a_stall(tmp_path):
    graph, plans = plans_of(sleepers(1), tmp_path)
    async with supervised(plans) as (sup, seen):
        applier = Applier(sup, graph)
        await until(lambda: any(r.state == "ready" for r in sup.replicas.values()))
        bad_graph, bad = plans_of(sleepers(1, seconds=601, ready=False), tmp_path, "bad")
        applier.apply(bad_graph, bad, set(), None, deadline=2)
        await until(lambda: applier.status()["services"]["Worker"]["state"] == "stalled", 30)
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        orig_graph, orig = plans_of(sleepers(1), tmp_path, "orig")
        done = applier.apply(orig_graph, orig, set(), None)
        assert done["unchanged"] == ["Worker"]
        await until(lambda: applier.status()["services"]["Worker"]["state"] == "complete", 30)
        assert applier.status()["done"]


@pytest.mark.e2e
async def test_a_stall_that_fell_back_counts_the_old_replicas_as_old(tmp_path):
    graph, plans = plans_of(sleepers(2), tmp_path)
    async with supervised(plans) as (sup, seen):
        applier = Applier(sup, graph)
        await until(lambda: sum(r.state == "ready" for r in sup.replicas.values()) == 2)
        bad_graph, bad = plans_of(sleepers(2, seconds=601, ready=False), tmp_path, "bad")
        applier.apply(bad_graph, bad, set(), None, deadline=2)
        await until(lambda: applier.status()["services"]["Worker"]["state"] == "stalled", 30)
        seen |= {r.pid for r in sup.replicas.values() if r.pid}
        worker = applier.status()["services"]["Worker"]
        assert {k: worker[k] for k in ("generation", "replicas", "updated", "ready", "old")} == \
            {"generation": 2, "replicas": 2, "updated": 0, "ready": 0, "old": 2}


def test_the_cli_judges_only_what_its_apply_touched():
    applied = {"generation": 3, "replaced": {"Worker": "RollingUpdate"}, "added": [], "scaled": {}}
    status = {"services": {"Worker": {"generation": 3, "state": "progressing"},
                           "Crashing": {"generation": 1, "state": "scaling"},
                           "Old": {"generation": 2, "state": "stalled"}}}
    assert _waiting(applied, status)
    status["services"]["Worker"]["state"] = "complete"
    assert not _waiting(applied, status)  # an unrelated crash loop or an earlier stall is not waited on
    status["services"]["Worker"]["state"] = "stalled"
    assert _state(applied, status, "Worker") == "stalled"
    scaled = {"generation": 4, "replaced": {}, "added": [], "scaled": {"Old": 2}}
    assert _state(scaled, status, "Old") == "scaling"  # generation 2's stall is not this apply's
    status["services"]["Worker"]["generation"] = 5
    assert _state(applied, status, "Worker") == "done"  # a later apply took it over


# ----- 11, 12: an apply that fails or comes too late changes nothing --------------------------------

def test_an_apply_that_fails_midway_changes_nothing(tmp_path, monkeypatch):
    doc = sleepers(1)
    doc["spec"]["services"]["Other"] = copy.deepcopy(doc["spec"]["services"]["Worker"])
    graph, plans = plans_of(doc, tmp_path)
    sup = Supervisor(plans, out=open(os.devnull, "w"))
    applier, before = Applier(sup, graph), dict(plans)
    new_graph, new = plans_of(sleepers(1, seconds=601), tmp_path, "new")  # Other removed, Worker changed

    def broken(plan):
        raise ValueError("cannot fingerprint")
    monkeypatch.setattr(local_rollout, "fingerprint", broken)
    with pytest.raises(ValueError):
        applier.apply(new_graph, new, set(), None)
    assert sup.plans == before and set(before) == {"Worker", "Other"}
    assert applier.generation == 1 and applier.graph is graph and not applier.rollouts and not sup._retiring


def test_an_apply_during_shutdown_is_refused(tmp_path):
    graph, plans = plans_of(sleepers(1), tmp_path)
    sup = Supervisor(plans, out=open(os.devnull, "w"))
    sup.stopping = True
    with pytest.raises(Halted):
        Applier(sup, graph).apply(*plans_of(sleepers(1, seconds=601), tmp_path, "new"), set(), None)

"""`GraphRun.apply` (run.py) on a run built as `run` builds it (`build_runs`) but whose replicas are never
started: what an apply decides of the file's autoscalers and DynamoModels, read off the run's own objects. A
refused apply (a changed dynamoNamespace, refused by the Applier after the autoscalers were prepared) changes
none of them; an autoscaler removed from the file leaves the count to its scaling adapter (Dynamo's replica
ownership model) or, for a Deployment target, to the manifest, and a planner's worker to the planner; an
autoscaler that cannot be read is a 400 at the control endpoint. End to end: test_run_apply_documents.py."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest
import yaml

from dynamo.deploy.control import ControlServer
from dynamo.deploy.local_rollout import ApplyRequest, Refused
from dynamo.deploy.run import GraphRun, build_runs
from dynamo.deploy.validate import validate_file
from tests.deploy.manifests import mocker_graph
from tests.fixtures.procs import REPO

TINY = str(REPO / "tests/fixtures/tiny-model")
ADAPTER = "DynamoGraphDeploymentScalingAdapter"


def graph(**worker) -> dict:
    return mocker_graph(worker={"replicas": 1, "modelRef": {"name": "tiny-llama"},
                                "scalingAdapter": {"enabled": True}, **worker})


def hpa(kind: str = ADAPTER, name: str = "worker-hpa", target: str = "compat-mockerworker") -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"kind": kind, "name": target}, "minReplicas": 1, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "memory", "target": {"type": "AverageValue", "averageValue": "1Mi"}}}]}}


def dynamo_model(uri: str) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoModel", "metadata": {"name": "tiny-lora"},
            "spec": {"modelName": "tiny-lora", "baseModelName": "tiny-llama", "modelType": "lora",
                     "source": {"uri": uri}}}


def built(tmp_path, *docs: dict, overrides: tuple[str, ...] = ()) -> GraphRun:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    args = argparse.Namespace(file=str(path), overrides=list(overrides), append_args=[], volumes=[], model=TINY, namespace="demo",
                              frontend_port=8123, prometheus_endpoint=None, log_dir=None, grace=1.0, control_port=0,
                              hpa_sync_period=1.0)
    report = validate_file(path)
    assert report.ok, report.errors
    (run,) = build_runs(args, report.graphs, str(tmp_path / "state"), str(tmp_path / "pods"))
    return run


def request(*docs: dict) -> ApplyRequest:
    return ApplyRequest(manifest=yaml.safe_dump_all(docs))


async def idle(scaler) -> None:
    await asyncio.Event().wait()


async def test_a_refused_apply_changes_no_autoscaler_task_nor_model(tmp_path):
    run = built(tmp_path, graph(), hpa(), dynamo_model("file:///a"))
    run.autoscaling.start(idle)
    await asyncio.sleep(0)
    entries = dict(run.autoscaling.entries)
    tasks = [entry.task for entry in entries.values()]
    models, before, generation = run.adapters.models, run.graph, run.applier.generation
    moved = graph(dynamoNamespace="elsewhere")  # refused by the Applier, after the autoscalers were prepared
    try:
        with pytest.raises(Refused, match="dynamoNamespace"):
            await run.apply(request(moved, hpa(name="renamed"), dynamo_model("file:///b")))
        await asyncio.sleep(0)
        assert run.autoscaling.entries == entries and [e.task for e in entries.values()] == tasks
        assert not any(task.done() for task in tasks) and run.autoscaling.held == {}
        assert run.adapters.models is models and run.adapters.retired == {} and not run.adapters.changed.is_set()
        assert run.graph is before and run.applier.generation == generation
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_hpa_on_the_scaling_adapter_leaves_its_count_to_the_adapter_once_removed(tmp_path):
    run = built(tmp_path, graph(), hpa())
    run.sup.scale("MockerWorker", 3)  # what the HPA left
    applied = await run.apply(request(graph()))
    assert applied["autoscalers"] == {"removed": ["HorizontalPodAutoscaler worker-hpa"]}
    assert applied["scaled"] == {} and "MockerWorker" in applied["unchanged"]
    assert run.sup.plans["MockerWorker"].replicas == 3
    assert ("MockerWorker: no autoscaler of the file scales it now; its replicas (3) stay, owned by its scaling "
            f"adapter {ADAPTER} compat-mockerworker") in " ".join(applied["notes"])
    assert any("change them with /scale (python -m dynamo.deploy scale URL MockerWorker=N)" in n
               for n in applied["notes"])
    later = await run.apply(request(graph(replicas=2)))  # a later apply: the webhook would refuse the edit
    assert later["scaled"] == {} and run.sup.plans["MockerWorker"].replicas == 3
    assert not any("scaling adapter" in n for n in later["notes"])  # said once, as it was let go
    run.sup.scale("MockerWorker", 1)  # /scale is how it changes
    assert (await run.apply(request(graph())))["scaled"] == {} and run.sup.plans["MockerWorker"].replicas == 1


async def test_a_replicas_edit_that_runs_set_overrides_is_said_in_the_notes(tmp_path):
    run = built(tmp_path, graph(replicas=2), overrides=("MockerWorker.replicas=1",))
    applied = await run.apply(request(graph(replicas=3)))
    assert "MockerWorker" in applied["unchanged"] and run.sup.plans["MockerWorker"].replicas == 1
    assert applied["notes"] == ["MockerWorker: its replicas are run's --set MockerWorker.replicas=1: 1 kept, not the "
                                "manifest's 3"]
    assert (await run.apply(request(graph(replicas=1))))["notes"] == []  # the manifest agrees: nothing to say


async def test_an_hpa_on_the_deployment_hands_the_count_back_to_the_manifest_once_removed(tmp_path):
    run = built(tmp_path, graph(), hpa(kind="Deployment"))
    run.sup.scale("MockerWorker", 3)
    applied = await run.apply(request(graph()))
    assert applied["scaled"] == {"MockerWorker": 1} and run.sup.plans["MockerWorker"].replicas == 1
    assert "MockerWorker: no autoscaler of the file scales it now; the manifest's replicas (1) apply" in applied["notes"]


async def test_a_planner_worker_stays_the_planners_when_its_autoscaler_goes(tmp_path):
    with_planner = graph()
    with_planner["spec"]["services"]["Planner"] = {"componentType": "planner", "extraPodSpec": {"mainContainer": {
        "image": "x/y:1", "command": ["python3", "-m", "dynamo.planner"]}}}
    run = built(tmp_path, with_planner, hpa(kind="Deployment"))
    run.sup.scale("MockerWorker", 3)
    applied = await run.apply(request(with_planner))
    assert applied["scaled"] == {} and run.sup.plans["MockerWorker"].replicas == 3
    assert not any("no autoscaler of the file scales it now" in n for n in applied["notes"]), applied["notes"]


@pytest.mark.parametrize("metrics", ["x", [1]])
async def test_an_unreadable_autoscaler_is_a_400_naming_it(tmp_path, metrics):
    run = built(tmp_path, graph())
    control = ControlServer(run.sup, "compat")
    control.applier = run.apply
    broken = hpa()
    broken["spec"]["metrics"] = metrics
    body = json.dumps({"manifest": yaml.safe_dump_all([graph(), broken])}).encode()
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await control.app({"type": "http", "method": "POST", "path": "/apply"}, receive, send)
    assert sent[0]["status"] == 400
    error = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert "HorizontalPodAutoscaler worker-hpa: cannot read a field of the wrong kind (spec.metrics" in error
    assert run.applier.generation == 1 and len(run.autoscaling) == 0


async def test_each_graph_of_a_file_takes_the_dynamo_models_its_services_serve(tmp_path):
    other = mocker_graph(worker={"modelRef": {"name": "other-base"}})
    other["metadata"]["name"] = "other"
    path = tmp_path / "graphs.yaml"
    path.write_text(yaml.safe_dump_all([graph(), other, dynamo_model("file:///a")]))
    args = argparse.Namespace(file=str(path), overrides=[], append_args=[], volumes=[], model=TINY, namespace="demo",
                              frontend_port=8123, prometheus_endpoint=None, log_dir=None, grace=1.0, control_port=0)
    runs = {r.graph.metadata.name: r for r in build_runs(args, validate_file(path).graphs, str(tmp_path / "state"),
                                                           str(tmp_path / "pods"))}
    assert [m.spec.modelName for m in runs["compat"].adapters.models] == ["tiny-lora"]
    assert runs["other"].adapters.models == []
    applied = await runs["other"].apply(request(graph(), other, dynamo_model("file:///b")))  # compat's, not its own
    assert applied["models"] == {"added": [], "removed": [], "changed": []}
    nobody = dynamo_model("file:///c")
    nobody["spec"]["baseModelName"] = "nobody"
    with pytest.raises(ValueError, match="no service of compat or other has modelRef.name 'nobody'"):
        await runs["other"].apply(request(graph(), other, nobody))

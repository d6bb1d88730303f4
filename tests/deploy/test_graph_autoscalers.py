"""What an apply changes of a graph's HPAs / ScaledObjects under `run` (`graph_autoscalers.py`) and of its
DynamoModels (`AdapterReconciler.replace`), as pure logic: the diff by object identity, an edited
autoscaler keeping its history as the HPA controller keeps it per object, a removed one's driver
cancelled and awaited, an unreadable one refusing the apply, and which adapters are unloaded where.
End to end on a real `run`: tests/deploy/test_run_apply_documents.py."""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest
import yaml

from dynamo.deploy.dynamo_model import AdapterReconciler, load_models
from dynamo.deploy.graph_autoscalers import GraphAutoscalers, diff
from dynamo.deploy.supervisor import Supervisor
from dynamo.deploy.validate import validate_file
from tests.deploy.manifests import load, mocker_graph

HPA = ("HorizontalPodAutoscaler", "", "worker-hpa")
ADAPTER = "DynamoGraphDeploymentScalingAdapter"


def graph_doc(**worker) -> dict:
    return mocker_graph(worker={"modelRef": {"name": "tiny-llama"}, **worker})


def hpa(name: str = "worker-hpa", service: str = "mockerworker", max_replicas: int = 3, kind: str = "Deployment",
        **spec) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": f"compat-{service}"},
                     "minReplicas": 1, "maxReplicas": max_replicas, "metrics": [{"type": "Resource", "resource": {
                         "name": "memory", "target": {"type": "AverageValue", "averageValue": "1Mi"}}}], **spec}}


def lora(name: str, uri: str, base: str = "tiny-llama") -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoModel", "metadata": {"name": name},
            "spec": {"modelName": name, "baseModelName": base, "modelType": "lora", "source": {"uri": uri}}}


def test_the_diff_is_by_identity_and_content():
    change = diff({("HPA", "a"): "1", ("HPA", "b"): "1", ("HPA", "c"): "1"},
                  {("HPA", "b"): "1", ("HPA", "c"): "2", ("ScaledObject", "a"): "1"})
    assert change.removed == [("HPA", "a")] and change.kept == [("HPA", "b")]
    assert change.changed == [("HPA", "c")] and change.added == [("ScaledObject", "a")]


async def test_an_apply_adds_edits_keeping_history_and_removes_with_the_driver_awaited(tmp_path):
    graph = load(graph_doc(), tmp_path)
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    driven: list[str] = []
    ended: list[str] = []

    async def drive(scaler):
        driven.append(scaler.label)
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(scaler.label)

    set_.start(drive)
    first = set_.prepare([graph_doc(), hpa()], graph)
    assert first.services == {"MockerWorker"} and set_.summary(first) == {"added": ["HorizontalPodAutoscaler "
                                                                                      "worker-hpa"]}
    assert set_.commit(first) == [] and set_.services() == {"MockerWorker"}
    await asyncio.sleep(0)
    old = set_.entries[HPA]
    old.scaler.governor.recommendations.append((5.0, 3))
    old.scaler.started = 7.0

    same = set_.prepare([graph_doc(), hpa()], graph)
    assert same.diff.kept == [HPA] and set_.commit(same) == [] and set_.entries[HPA] is old

    edited = set_.prepare([graph_doc(), hpa(max_replicas=5)], graph)
    assert edited.diff.changed == [HPA] and set_.entries[HPA] is old  # prepared: nothing changed yet
    stopped = set_.commit(edited)
    await asyncio.gather(*stopped, return_exceptions=True)
    new = set_.entries[HPA]
    assert new is not old and new.scaler.governor.high == 5 and old.task.cancelled()
    assert new.scaler.governor.recommendations == [(5.0, 3)] and new.scaler.started == 7.0
    await asyncio.sleep(0)
    assert driven == [HPA[0] + " worker-hpa"] * 2 and ended == driven[:1]

    renamed = set_.prepare([graph_doc(), hpa(name="other")], graph)  # a new object: no history
    assert renamed.diff.removed == [HPA] and renamed.diff.added == [("HorizontalPodAutoscaler", "", "other")]
    await asyncio.gather(*set_.commit(renamed), return_exceptions=True)
    assert set_.entries[("HorizontalPodAutoscaler", "", "other")].scaler.governor.recommendations == []

    gone = set_.prepare([graph_doc()], graph)
    assert gone.services == set() and set_.summary(gone) == {"removed": ["HorizontalPodAutoscaler other"]}
    await asyncio.gather(*set_.commit(gone), return_exceptions=True)
    assert len(set_) == 0 and len(ended) == 3
    await set_.close()


async def test_an_edited_scaled_object_keeps_its_last_activity_and_creation(tmp_path):
    graph = load(graph_doc(), tmp_path)
    keda = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "so"},
            "spec": {"scaleTargetRef": {"name": "compat-mockerworker", "kind": "Deployment"}, "triggers": [
                {"type": "prometheus", "metadata": {"serverAddress": "http://127.0.0.1:1", "query": "q",
                                                    "threshold": "4"}}]}}
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    set_.commit(set_.prepare([graph_doc(), keda], graph))
    (old,) = set_.entries.values()
    old.scaler.keda.last_active, old.scaler.started = 40.0, 3.0
    edited = copy.deepcopy(keda)
    edited["spec"]["cooldownPeriod"] = 10
    set_.commit(set_.prepare([graph_doc(), edited], graph))
    (new,) = set_.entries.values()
    assert new.scaler.keda.cooldown == 10 and new.scaler.keda.last_active == 40.0 and new.scaler.started == 3.0
    namespaced = copy.deepcopy(edited)
    namespaced["metadata"]["namespace"] = "team"  # another object of that name
    assert set_.prepare([graph_doc(), namespaced], graph).diff.added == [("ScaledObject", "team", "so")]


def broken_documents() -> dict[str, dict]:
    no_max, text, numbers = hpa(), hpa(metrics="x"), hpa(metrics=[1])
    del no_max["spec"]["maxReplicas"]
    keda = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "so"},
            "spec": {"scaleTargetRef": {"kind": ADAPTER, "name": "compat-mockerworker"},
                     "triggers": [{"type": "prometheus", "metadata": ["query"]}]}}
    return {"'maxReplicas' (a required field is missing)": no_max,
            "a field of the wrong kind (spec.metrics: not a list of mappings)": text,
            "a field of the wrong kind (spec.metrics: not a list of mappings) ": numbers,
            "a field of the wrong kind (spec.triggers[0].metadata: not a mapping)": keda}


@pytest.mark.parametrize("why", list(broken_documents()))
def test_an_unreadable_autoscaler_is_a_validation_error_so_start_and_apply_refuse_it_alike(tmp_path, why):
    doc = broken_documents()[why]
    label = f"{doc['kind']} {doc['metadata']['name']}"
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump_all([graph_doc(), doc]))
    errors = validate_file(path).errors  # `run` refuses to start; an apply's manifest_graph answers 400
    assert errors == [f"document 1: {label}: cannot read {why.strip()}"]
    with pytest.raises(ValueError, match="cannot read"):  # never an AttributeError (a 500, a traceback)
        GraphAutoscalers(lambda service: [], None, 1.0).prepare([graph_doc(), doc], load(graph_doc(), tmp_path))


async def test_a_driver_that_crashes_is_said_and_marked_in_its_status(tmp_path, caplog):
    graph = load(graph_doc(), tmp_path)
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    set_.commit(set_.prepare([graph_doc(), hpa()], graph))
    (scaler,) = set_
    scaler.last = {"replicas": 1, "decided": 3}

    async def drive(scaler):
        raise RuntimeError("scale refused")

    with caplog.at_level(logging.ERROR, logger="dynamo.deploy"):
        set_.start(drive)
        await set_.close()
    assert scaler.status()["error"] == "its evaluation stopped: RuntimeError('scale refused')"
    assert scaler.status()["decided"] == 3  # the last evaluation stays, marked
    assert any("its evaluation of MockerWorker stopped" in r.getMessage() for r in caplog.records)


def test_a_second_autoscaler_on_a_service_is_a_note_and_only_the_first_is_evaluated(tmp_path):
    graph = load(graph_doc(), tmp_path)
    pending = GraphAutoscalers(lambda service: [], None, 1.0).prepare(
        [graph_doc(), hpa(), hpa(name="second")], graph)
    assert list(pending.built) == [HPA]
    assert pending.notes == ["compat/MockerWorker: only HorizontalPodAutoscaler worker-hpa of its 2 autoscalers is "
                             "evaluated"]


def two_services(**other) -> dict:
    doc = graph_doc()
    doc["spec"]["services"]["Other"] = {**copy.deepcopy(doc["spec"]["services"]["MockerWorker"]), **other}
    return doc


async def test_an_edit_moving_an_autoscaler_to_another_service_keeps_its_history(tmp_path):
    """Intended: the HPA controller keys its history by the HPA object, not by its target (module docstring)."""
    doc = two_services()
    graph = load(doc, tmp_path)
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    set_.commit(set_.prepare([doc, hpa(kind=ADAPTER)], graph))
    set_.entries[HPA].scaler.governor.recommendations.append((5.0, 3))
    moved = set_.prepare([doc, hpa(kind=ADAPTER, service="other")], graph)
    assert moved.diff.changed == [HPA] and moved.services == {"Other"}
    assert moved.held == {"MockerWorker": "compat-mockerworker"}  # its adapter keeps what the HPA left
    set_.commit(moved)
    assert set_.entries[HPA].scaler.service == "Other"
    assert set_.entries[HPA].scaler.governor.recommendations == [(5.0, 3)]


def test_a_removed_autoscaler_leaves_the_count_to_its_scaling_adapter_or_to_the_manifest(tmp_path):
    doc = two_services()
    graph = load(doc, tmp_path)
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    set_.commit(set_.prepare([doc, hpa(kind=ADAPTER), hpa(name="plain", service="other")], graph))
    gone = set_.prepare([doc], graph)
    assert gone.held == {"MockerWorker": "compat-mockerworker"} and gone.released == ["Other"]
    assert gone.owned == {"MockerWorker"}
    set_.commit(gone)
    assert set_.prepare([doc], graph).owned == {"MockerWorker"}  # a later apply: still the adapter's
    disabled = two_services()
    disabled["spec"]["services"]["MockerWorker"]["scalingAdapter"] = {"disable": True}
    released = set_.prepare([disabled], load(disabled, tmp_path))  # no adapter now: the manifest's count again
    assert released.held == {} and released.released == ["MockerWorker"] and released.owned == set()
    again = set_.prepare([doc, hpa(name="plain")], graph)  # an autoscaler on it again: its count, not held
    assert again.owned == {"MockerWorker"} and again.held == {} and again.released == []


def test_a_service_requests_change_is_an_edit(tmp_path):
    graph = load(graph_doc(), tmp_path)
    set_ = GraphAutoscalers(lambda service: [], None, 1.0)
    set_.commit(set_.prepare([graph_doc(), hpa()], graph))
    bigger = graph_doc(resources={"requests": {"memory": "2Gi"}})
    assert set_.prepare([bigger, hpa()], load(bigger, tmp_path)).diff.changed == [HPA]


async def test_replacing_the_models_says_what_changed_and_retires_removed_adapters_where_they_were(tmp_path):
    doc = graph_doc()
    doc["spec"]["services"]["Other"] = copy.deepcopy(doc["spec"]["services"]["MockerWorker"])
    doc["spec"]["services"]["Other"]["modelRef"] = {"name": "other-base"}
    graph = load(doc, tmp_path)
    a, b, c = lora("a", "file:///a"), lora("b", "file:///b"), lora("c", "file:///c")
    reconciler = AdapterReconciler(Supervisor({}), graph, load_models([doc, a, b], graph))
    reconciler.total, reconciler.ready = {"a": 2, "b": 2}, {"a": {"MockerWorker-0"}, "b": set()}
    moved = lora("b", "file:///b", base="other-base")
    changed = reconciler.replace(graph, load_models([doc, lora("a", "file:///a2"), moved, c], graph))
    assert changed == {"added": ["c"], "removed": [], "changed": ["a", "b"]}
    assert reconciler.retired == {"b": frozenset({"MockerWorker"})}  # moved off MockerWorker: unloaded there
    assert reconciler.changed.is_set() and reconciler.supervisor.version == 1  # the status table shows it
    gone = reconciler.replace(graph, load_models([doc], graph))
    assert gone == {"added": [], "removed": ["a", "b", "c"], "changed": []}
    assert reconciler.retired == {"a": frozenset({"MockerWorker"}), "b": frozenset({"MockerWorker", "Other"}),
                                  "c": frozenset({"MockerWorker"})}
    assert reconciler.status() == [] and reconciler.total == {} and reconciler.ready == {}
    back = reconciler.replace(graph, load_models([doc, a], graph))  # placed again: no longer to unload
    assert back["added"] == ["a"] and "a" not in reconciler.retired


def test_two_dynamo_models_naming_one_adapter_are_refused(tmp_path):
    graph = load(graph_doc(), tmp_path)
    twin = lora("a", "file:///other")
    twin["metadata"]["name"] = "a-copy"
    with pytest.raises(ValueError, match="already names adapter 'a'"):
        load_models([graph_doc(), lora("a", "file:///a"), twin], graph)

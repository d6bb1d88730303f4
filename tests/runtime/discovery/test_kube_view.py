"""Kubernetes-native discovery's pure logic: Dynamo's instance id of a pod, the translation between
records and a DynamoWorkerMetadata's `spec.data` (Dynamo's `endpoints` / `model_cards` layout), and
which records a set of EndpointSlices makes visible."""

from __future__ import annotations

import json

from dynamo.runtime.discovery.kube_view import ClusterView, cr_data, pod_instance_id, records_of



def test_instance_id_is_rusts_default_hasher_of_the_pod_name_masked_to_53_bits():
    # Printed by `DefaultHasher::new(); name.hash(&mut h); h.finish() & 0x001F_FFFF_FFFF_FFFF` (rustc 1.95).
    assert pod_instance_id("worker-0") == 1186445869714687
    assert pod_instance_id("vllm-agg-0-decode-abc12") == 3513547182453011
    assert pod_instance_id("") == 121655548788207


def _records(instance: int) -> dict[str, bytes]:
    ep = {"namespace": "dynamo", "component": "backend", "endpoint": "generate",
          "instance_id": instance, "transport": {"tcp": "10.0.0.7:4567"}}
    card = {"type": "Model", "namespace": "dynamo", "component": "backend", "endpoint": "generate",
            "instance_id": instance, "card_json": {"display_name": "m"}}
    lora = {**card, "model_suffix": "my-lora", "card_json": {"display_name": "my-lora"}}
    return {f"v1/instances/dynamo/backend/generate/{instance:x}": json.dumps(ep).encode(),
            f"v1/mdc/dynamo/backend/generate/{instance:x}": json.dumps(card).encode(),
            f"v1/mdc/dynamo/backend/generate/{instance:x}/my-lora": json.dumps(lora).encode(),
            "v1/event_channels/dynamo/backend/kv": b'{"endpoint":"tcp://10.0.0.7:5555"}'}


def test_records_round_trip_through_dynamos_layout():
    records = _records(pod_instance_id("worker-0"))
    data = cr_data(records)
    assert set(data["endpoints"]) == {"dynamo/backend/generate"}
    assert data["endpoints"]["dynamo/backend/generate"]["type"] == "Endpoint"  # Dynamo's tag
    assert set(data["model_cards"]) == {"dynamo/backend/generate", "dynamo/backend/generate/my-lora"}
    assert data["model_cards"]["dynamo/backend/generate"]["card_json"] == {"display_name": "m"}
    back = records_of(json.loads(json.dumps(data)))
    assert {k: json.loads(v) for k, v in back.items()} == {k: json.loads(v) for k, v in records.items()}
    assert records_of(json.dumps(data)).keys() == records.keys()  # a JSON string, as Dynamo's readers allow
    assert records_of("not json") == {} and records_of(None) == {}


def _slice(name: str, pods: dict[str, bool | None]) -> dict:
    return {"metadata": {"name": name}, "endpoints": [
        {"targetRef": {"kind": "Pod", "name": pod}, "conditions": {} if ready is None else {"ready": ready}}
        for pod, ready in pods.items()]}


def _metadata(name: str, instance: int, owner: str | None = None) -> dict:
    meta = {"name": name, **({"ownerReferences": [{"kind": "Pod", "name": owner}]} if owner else {})}
    return {"metadata": meta, "spec": {"data": cr_data(_records(instance))}}


def test_only_ready_pods_records_are_visible_and_watchers_hear_of_changes():
    view = ClusterView()
    changes = view.subscribe()
    view.set_metadata({"a": _metadata("a", 1), "b-main": _metadata("b-main", 2, owner="b"), "c": _metadata("c", 3)})
    assert view.visible() == {} and changes.empty()  # nothing ready yet: nothing changed
    view.set_slices({"s": _slice("s", {"a": True, "b": None, "c": False})})
    ids = {k.rsplit("/", 1)[1] for k in view.visible() if k.startswith("v1/instances/")}
    assert ids == {"1", "2"}  # ready unset counts as ready (Kubernetes' rule); owner reference names the pod
    assert changes.get_nowait() is True
    view.set_slices({"s": _slice("s", {"a": True, "b": None, "c": False})})
    assert changes.empty()  # the same view: no event
    view.close()
    assert changes.get_nowait() is False

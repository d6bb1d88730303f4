"""One model's object and Dynamo's readiness report (frontend/model_routes.py), over real model
entries: ready where a worker can answer end to end, per namespace; prefill workers alone are not."""

from __future__ import annotations

from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.model_routes import model_object, readiness
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.router.policy import WorkerInfo
from dynamo.runtime.records import EndpointId


def card(worker_type: str) -> ModelDeploymentCard:
    return ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096,
                               kv_cache_block_size=16, worker_type=worker_type)


def entry_with(*workers: tuple[int, str, str]) -> ModelEntry:
    entry = ModelEntry("m", None, card("aggregated"))  # type: ignore[arg-type]  # nothing here tokenizes
    for iid, namespace, worker_type in workers:
        entry.workers[iid] = WorkerInfo(iid, EndpointId(namespace, "backend", "generate"), card(worker_type),
                                        f"127.0.0.1:{iid}")
    return entry


def test_a_namespace_with_only_prefill_workers_is_missing_decode():
    report = readiness(entry_with((1, "blue", "aggregated"), (2, "blue", "aggregated"), (3, "green", "prefill")))
    assert report["model"] == "m" and report["ready"] is True
    blue, green = report["namespaces"]["blue"], report["namespaces"]["green"]
    assert blue == {"ready": True, "worker_types": {"aggregated": {"workers": 2, "needs": []}},
                    "present": ["aggregated"], "missing_worker_types": []}
    assert (green["ready"], green["missing_worker_types"]) == (False, ["decode"])
    assert readiness(entry_with((3, "green", "prefill")))["ready"] is False


def test_the_model_object_names_a_loras_base():
    entry = entry_with()
    assert model_object(entry) == {"id": "m", "object": "model", "created": entry.created, "owned_by": "dynamo"}
    entry.card = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096,
                                     kv_cache_block_size=16, lora_name="m", base_model_path="base-model")
    assert model_object(entry)["parent"] == "base-model"

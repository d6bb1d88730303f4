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


def test_enforce_disagg_without_a_prefill_worker_is_not_ready():
    """--enforce-disagg: requests get 503 prefill_unavailable without a prefill worker, so the model is not ready."""
    decode_only = entry_with((1, "blue", "decode"))
    assert readiness(decode_only)["ready"] is True  # the decode worker prefills itself
    report = readiness(decode_only, enforce_disagg=True)
    assert report["ready"] is False
    assert report["namespaces"]["blue"] == {"ready": False, "worker_types": {"decode": {"workers": 1,
                                                                                        "needs": ["prefill"]}},
                                            "present": ["decode"], "missing_worker_types": ["prefill"]}
    both = readiness(entry_with((1, "blue", "decode"), (2, "blue", "prefill"), (3, "green", "decode")), True)
    assert both["ready"] is True and both["namespaces"]["blue"]["missing_worker_types"] == []
    assert both["namespaces"]["green"]["missing_worker_types"] == ["prefill"]
    assert readiness(entry_with((3, "green", "prefill")), True)["namespaces"]["green"]["missing_worker_types"] == \
        ["decode"]


def test_enforce_disagg_says_only_decode_workers_need_prefill():
    """An aggregated worker serves a request alone: under --enforce-disagg it never `needs` prefill (a decode
    worker does), though its namespace still misses one (its requests get 503 prefill_unavailable)."""
    report = readiness(entry_with((1, "blue", "aggregated"), (2, "blue", "decode")), enforce_disagg=True)
    types = report["namespaces"]["blue"]["worker_types"]
    assert types["aggregated"]["needs"] == [] and types["decode"]["needs"] == ["prefill"]
    assert report["namespaces"]["blue"]["missing_worker_types"] == ["prefill"]

"""What the frontend says about one served model: its OpenAI model object (`GET /v1/models`, and
`GET /v1/models/{id}`, OpenAI's retrieve) and Dynamo's readiness report (`GET /v1/models/{id}/ready`):
per namespace, the worker types present and how many workers of each serve it. A model is ready
where some worker can answer a request end to end (aggregated or decode); prefill workers alone
cannot, so `decode` is then the missing type. Ids may contain `/` (`Qwen/Qwen3-0.6B`).
"""

from __future__ import annotations

from typing import Any

from dynamo.llm.model_card import WorkerType

PREFIX = "/v1/models/"
READY_SUFFIX = "/ready"


def model_object(entry) -> dict[str, Any]:
    out = {"id": entry.name, "object": "model", "created": entry.created, "owned_by": "dynamo"}
    if entry.card.lora_name:
        out["parent"] = entry.card.base_model_path  # a LoRA: its base model
    return out


def readiness(entry) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for worker in entry.serving():
        types = counts.setdefault(worker.endpoint.namespace, {})
        kind = str(worker.card.worker_type)
        types[kind] = types.get(kind, 0) + 1
    namespaces = {}
    for namespace, types in sorted(counts.items()):
        ready = any(kind != WorkerType.PREFILL for kind in types)
        namespaces[namespace] = {
            "ready": ready, "worker_types": {k: {"workers": n, "needs": []} for k, n in sorted(types.items())},
            "present": sorted(types), "missing_worker_types": [] if ready else [str(WorkerType.DECODE)]}
    return {"model": entry.name, "ready": any(ns["ready"] for ns in namespaces.values()), "namespaces": namespaces}

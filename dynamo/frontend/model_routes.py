"""What the frontend says about the served models (`ModelRoutes`, and the `/health` report): their OpenAI model
objects (`GET /v1/models`, and `GET /v1/models/{id}`, OpenAI's retrieve) and Dynamo's readiness report
(`GET /v1/models/{id}/ready`): per namespace, the worker types present and how many workers of each serve it.
A model is ready where some worker can answer a request end to end (aggregated or decode); prefill workers alone
cannot, so `decode` is then the missing type; under --enforce-disagg a namespace without a prefill worker misses
`prefill` (its requests get 503 `prefill_unavailable`). Ids may contain `/` (`Qwen/Qwen3-0.6B`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from dynamo.frontend import errors
from dynamo.llm.model_card import WorkerType
from dynamo.runtime.asgi import send_json

PREFIX = "/v1/models/"
STARTED = int(time.time())
READY_SUFFIX = "/ready"


def model_object(entry) -> dict[str, Any]:
    out = {"id": entry.name, "object": "model", "created": entry.created, "owned_by": "dynamo"}
    if entry.card.lora_name:
        out["parent"] = entry.card.base_model_path  # a LoRA: its base model
    return out


def awaited_object(name: str) -> dict[str, Any]:
    """An expected model no worker has registered yet (`--model-name` under --wait-for-workers-secs)."""
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "dynamo"}


def readiness(entry, enforce_disagg: bool = False) -> dict[str, Any]:
    """`enforce_disagg` (--enforce-disagg): a request needs a prefill worker too (else 503
    `prefill_unavailable`), so a namespace without one is not ready and lists `prefill` as missing; a decode
    worker type says it `needs` prefill (an aggregated one never does). Dynamo 1.6.1 ignores --enforce-disagg."""
    counts: dict[str, dict[str, int]] = {}
    for worker in entry.serving():
        types = counts.setdefault(worker.endpoint.namespace, {})
        kind = str(worker.card.worker_type)
        types[kind] = types.get(kind, 0) + 1
    namespaces = {}
    prefill = str(WorkerType.PREFILL)
    for namespace, types in sorted(counts.items()):
        missing = [] if any(kind != prefill for kind in types) else [str(WorkerType.DECODE)]
        if enforce_disagg and prefill not in types:
            missing.append(prefill)
        needing = str(WorkerType.DECODE)  # an aggregated worker serves alone; only a decode worker needs prefill
        worker_types = {kind: {"workers": n, "needs": [prefill] if enforce_disagg and kind == needing else []}
                        for kind, n in sorted(types.items())}
        namespaces[namespace] = {"ready": not missing, "worker_types": worker_types, "present": sorted(types),
                                 "missing_worker_types": missing}
    return {"model": entry.name, "ready": any(ns["ready"] for ns in namespaces.values()), "namespaces": namespaces}


class ModelRoutes:
    """The model routes a frontend serves, over its model manager."""

    def __init__(self, models, started: Callable[[], bool] = lambda: True, enforce_disagg: bool = False) -> None:
        self.models = models
        self.started = started  # past --router-min-initial-workers: a model is ready only once requests go through
        self.enforce_disagg = enforce_disagg  # --enforce-disagg: ready only with a prefill worker too

    def routes(self) -> dict[tuple[str, str], Callable]:
        return {("GET", "/v1/models"): self.list_models}

    def prefix_routes(self) -> list[tuple[str, str, Callable]]:
        return [("GET", PREFIX, self.model)]

    async def list_models(self, scope, receive, send) -> None:
        data = [model_object(e) for e in self.models.catalog()] + [awaited_object(n) for n in self.models.awaited()]
        await send_json(send, 200, {"object": "list", "data": data})

    async def model(self, scope, receive, send) -> None:
        """`GET /v1/models/{id}` (the model object) and `/v1/models/{id}/ready` (Dynamo's readiness)."""
        name = scope["path"][len(PREFIX):]
        ready = name.endswith(READY_SUFFIX) and self.models.get(name) is None  # an id may end so
        name = name[:-len(READY_SUFFIX)] if ready else name
        entry = self.models.get(name)
        listed = entry is not None and bool(entry.serving() if ready else entry.decode_workers())
        if not listed and self.models.list_retired:  # scaled to zero (or its last worker leaving): listed, not ready
            entry = entry or self.models.retired.get(name)
            listed = entry is not None
        if entry is None and name in self.models.awaited():  # expected, no worker yet: listed, not ready
            report = {"model": name, "ready": False, "namespaces": {}}
            await (send_json(send, 503, report) if ready else send_json(send, 200, awaited_object(name)))
            return
        if entry is None or not listed:
            raise errors.model_not_found(name)
        if ready:
            report = readiness(entry, self.enforce_disagg)
            report["ready"] = report["ready"] and self.started()
            await send_json(send, 200 if report["ready"] else 503, report)
        else:
            await send_json(send, 200, model_object(entry))


def health_report(listed: list, extra: dict[str, Any], held: list[str] | None = None,
                  cards: dict[str, dict] | None = None) -> dict[str, Any]:
    """The frontend's `/health` body (Dynamo's shape): the models with serving workers, their endpoints
    and instances, plus the routing's own report (`extra`). `held`: the models without a worker whose
    requests wait for one (--wait-for-workers-secs): such a frontend serves (it holds the requests an
    autoscaler scales up from), so it reports healthy; a Kubernetes readiness probe that took it out of
    its Service at zero workers would keep the demand from ever arriving. `cards`: `model_cards`, per known model
    (listed or not, retired included: a stuck rollout shows), the card served and those held apart
    (`ModelManager.cards`).
    `worker_sets`: per model whose workers span several namespaces (a managed rolling update), each set with its
    decode and prefill worker counts (`worker_sets.py`); absent when no model does."""
    instances = [
        {"namespace": w.endpoint.namespace, "component": w.endpoint.component, "endpoint": w.endpoint.endpoint,
         "instance_id": w.instance_id, "transport": {"tcp": w.address}, "model": entry.name,
         "worker_type": w.card.worker_type}
        for entry in listed for w in entry.serving()
    ]
    if listed:
        status, message = "healthy", f"{len(listed)} model(s) with serving workers"
    elif held:
        status, message = "healthy", f"no worker yet; requests for {', '.join(held)} wait for one"
    else:
        status, message = "unhealthy", "no model has a worker"
    return {
        "status": status,
        "message": message,
        "endpoints": sorted({str(w.endpoint) for entry in listed for w in entry.serving()}),
        "instances": instances,
        **({"model_cards": cards} if cards is not None else {}),
        **({"worker_sets": sets} if (sets := worker_sets(listed)) else {}),
        **extra,
    }


def worker_sets(listed: list) -> dict[str, list[dict]]:
    """The worker sets of each listed model that has more than one."""
    out = {}
    for entry in listed:
        sets = entry.worker_sets()
        if not sets.single:
            out[entry.name] = sets.report()
    return out

"""A real `RouterService` (router/service.py) with its real KvPolicy, fed discovery records by hand
instead of a store, and workers that answer from memory instead of the request plane: what the service
decides from its workers' cards, without processes."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
from prometheus_client import CollectorRegistry

from dynamo.llm.model_card import ModelDeploymentCard, RuntimeConfig, card_record, slugify
from dynamo.llm.protocol import PreprocessedRequest, request_encoder
from dynamo.router.metrics import RouterMetrics
from dynamo.router.service import RouterService, RouterServiceConfig
from dynamo.runtime import records

NS, COMPONENT = "pool-ns", "backend"
EID = records.EndpointId(NS, COMPONENT, "generate")
BLOCK = 4


def service(**config) -> RouterService:
    """The service for `NS.COMPONENT.generate`, not started: no store, no request plane, metrics on
    its own registry (`svc.registry`), workers whose streams `svc.opened` records (see `open_streams`)."""
    cfg = RouterServiceConfig(endpoint=EID.path, use_kv_events=False, **config)
    cfg.validate()
    registry = CollectorRegistry()
    async def nothing_discovered(prefix: str) -> dict:
        return {}  # no worker the pool lacks, and nothing elsewhere in the namespace

    runtime = SimpleNamespace(namespace=NS, registry=registry, client=None,
                              store=SimpleNamespace(get_prefix=nothing_discovered))
    svc = RouterService(runtime, cfg)
    svc.policy.metrics = RouterMetrics.attach(registry, "dynamo_component", svc.policy._rows)
    svc.policy.on_membership_change(svc.pool)  # what start() does before discovery
    svc.registry = registry  # type: ignore[attr-defined]
    open_streams(svc)
    return svc


def card(model: str = "llama", worker_type: str = "aggregated", lora: str | None = None) -> ModelDeploymentCard:
    name = lora or model
    return ModelDeploymentCard(display_name=name, slug=slugify(name), model_path=f"/{model}", context_length=4096,
                               kv_cache_block_size=BLOCK, worker_type=worker_type, lora_name=lora,
                               runtime_config=RuntimeConfig(total_kv_blocks=64, max_num_batched_tokens=64))


def worker_joins(svc: RouterService, iid: int, *cards: ModelDeploymentCard) -> None:
    """Worker `iid`'s instance record and its cards (its model's, then any LoRA adapter's at
    `<key>/<adapter>`), as the service's discovery watches would apply them."""
    key = records.instance_key(EID, iid)
    value = records.instance_encoder.encode(records.InstanceRecord(namespace=NS, component=COMPONENT,
                                                                   endpoint="generate", instance_id=iid,
                                                                   transport={"tcp": f"w{iid}"}))
    svc._on_instance("put", key, iid, value)
    svc._publish_pool()
    for c in cards:
        card_put(svc, iid, c)


def card_put(svc: RouterService, iid: int, c: ModelDeploymentCard) -> None:
    svc._on_card("put", _card_key(iid, c), iid, card_record(c, NS, COMPONENT, "generate", iid))
    svc._publish_pool()


def card_gone(svc: RouterService, iid: int, c: ModelDeploymentCard) -> None:
    svc._on_card("delete", _card_key(iid, c), iid, None)
    svc._publish_pool()


def worker_leaves(svc: RouterService, iid: int, *cards: ModelDeploymentCard) -> None:
    for c in cards:
        svc._on_card("delete", _card_key(iid, c), iid, None)
    svc._on_instance("delete", records.instance_key(EID, iid), iid, None)
    svc._publish_pool()


def _card_key(iid: int, c: ModelDeploymentCard) -> str:
    key = records.mdc_key(EID, iid)
    return f"{key}/{c.slug}" if c.lora_name else key


class _Stream:
    """A worker's stream: one batch of one output token, then its end."""

    def __init__(self) -> None:
        self.batches = [[msgspec.msgpack.encode({"token_ids": [5]})]]

    async def next_payloads(self) -> list[bytes]:
        return self.batches.pop(0) if self.batches else []

    def cancel(self) -> None:
        pass

    def end_as(self, ctx) -> None:
        pass


def open_streams(svc: RouterService) -> None:
    svc.opened = []  # type: ignore[attr-defined]  # the addresses of the workers streams were opened on

    async def open_(address, endpoint, payload, on_first_output):
        svc.opened.append(address)  # type: ignore[attr-defined]
        on_first_output()
        return _Stream()

    svc.workers = SimpleNamespace(open=open_)  # type: ignore[assignment]


async def generate(svc: RouterService, request: PreprocessedRequest) -> list[bytes]:
    ctx = SimpleNamespace(is_stopped=lambda: False)
    return [item async for item in svc.generate(request_encoder.encode(request), ctx)]  # type: ignore[arg-type]

"""One served model name as the request path sees it (`ModelEntry`): the card and pipeline it is served by now,
its workers by type, the pool snapshots routing policies share, and those workers by namespace (`worker_sets`).
`ModelManager` owns every entry's state (discovery feeds it); the request path reads it."""

from __future__ import annotations

import functools
import time

from dynamo.frontend.thinking_budget import ThinkMarkers, think_markers
from dynamo.frontend.worker_sets import WorkerSets
from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.router.policy import Role, WorkerInfo, WorkerPool
from dynamo.runtime.records import InstanceRecord


class ModelEntry:
    """One served model name: its pipeline and its workers, by worker type."""

    def __init__(self, name: str, pipeline: ModelPipeline, card: ModelDeploymentCard,
                 block_size: int | None = None) -> None:
        self.name = name
        self.pipeline = pipeline
        self.card = card
        self.created = int(time.time())
        self.workers: dict[int, WorkerInfo] = {}
        self.version = 0  # bumped whenever the worker set changes (routers rebuild views)
        self.block_size = block_size or card.kv_cache_block_size
        self._pools: dict[Role, WorkerPool] = {}
        self._sets: WorkerSets | None = None

    @functools.cached_property
    def think_markers(self) -> ThinkMarkers | None:
        """The model's reasoning tags as token ids: a reasoning budget the frontend can enforce."""
        parser = self.card.runtime_config.reasoning_parser
        return think_markers(parser, self.pipeline.tokenizer) if parser else None

    def adopt(self, card: ModelDeploymentCard, pipeline: ModelPipeline, block_size: int | None) -> None:
        """Follow another card of this model (`model_generations.py`): its tokenizer, template, block size."""
        self.card, self.pipeline = card, pipeline
        self.block_size = block_size or card.kv_cache_block_size
        self.__dict__.pop("think_markers", None)  # the cached property, of the old tokenizer

    def serving(self, worker_type: WorkerType | None = None) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.address is not None
                and (worker_type is None or w.card.worker_type == worker_type)]

    def decode_workers(self) -> list[WorkerInfo]:
        """Workers that can answer a request end to end (aggregated or decode)."""
        return [w for w in self.workers.values() if w.address is not None and w.card.worker_type != WorkerType.PREFILL]

    def prefill_workers(self) -> list[WorkerInfo]:
        return self.serving(WorkerType.PREFILL)

    def pool(self, role: Role) -> WorkerPool:
        """The routable workers in `role`, as a snapshot routing policies share (one per version)."""
        pool = self._pools.get(role)
        if pool is None or pool.version != self.version:
            workers = self.prefill_workers() if role is Role.PREFILL else self.decode_workers()
            pool = self._pools[role] = WorkerPool(self.name, role, self.version, self.block_size,
                                                  tuple(sorted(workers, key=lambda w: w.instance_id)),
                                                  lora_name=self.card.lora_name)
        return pool

    def worker_sets(self) -> WorkerSets:
        """The served workers by namespace (`worker_sets.py`), grouped once per version."""
        sets = self._sets
        if sets is None or sets.version != self.version:
            sets = self._sets = WorkerSets(self.pool(Role.DECODE), self.pool(Role.PREFILL))
        return sets


def routable_address(card: ModelDeploymentCard, record: InstanceRecord | None) -> str | None:
    """Where to send the card's requests; None while the worker is not serving it (a LoRA adapter
    still loading counts as not serving: requests for it get 503)."""
    if record is None or (card.user_data or {}).get("lora_loading"):
        return None
    return record.address

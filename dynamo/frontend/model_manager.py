"""Tracks which models can be served, from discovery: model cards under `v1/mdc/`
and serving instances under `v1/instances/`. A model is listed only while at least
one worker has both its card and a live endpoint instance (so it is routable the
moment it appears: NVIDIA Dynamo lists models before they are routable). A model whose workers are
all gone is retired: 503 rather than 404, and under --wait-for-workers-secs still listed. Workers that
registered another card of a served model (a rolling update that changed it) are held apart, and
serve once they have outnumbered the others for a settle time (`model_generations.py`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from dynamo.frontend.model_entry import ModelEntry, routable_address
from dynamo.frontend.model_generations import (CARD_SETTLE_SECS, CardSwitch, Member, answering, generations,
                                               held_apart, successor)
from dynamo.llm.model_card import ModelDeploymentCard, WorkerType, card_decoder
from dynamo.frontend.model_defaults import ModelDefaults
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.token_cache import TokenCache
from dynamo.router.policy import WorkerInfo, reserved_pool_name
from dynamo.runtime import records
from dynamo.runtime.discovery.base import KeyValueStore, WatchEvent
from dynamo.runtime.records import EndpointId, InstanceRecord

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, store: KeyValueStore, namespace: str | None,
                 on_change: Callable[[ModelEntry], None] | None = None, block_size: int | None = None,
                 namespace_prefix: str | None = None, token_cache: TokenCache | None = None,
                 defaults: ModelDefaults | None = None,
                 observe_prep: Callable[[str, float], None] | None = None, card_settle: float = CARD_SETTLE_SECS,
                 on_card_switch: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_card_switch = on_card_switch  # a model's served card switched (dynamo_frontend_model_card_switches)
        self.card_settle = card_settle  # --model-card-settle-secs (model_generations.CardSwitch; 0: at once)
        self._switches: dict[str, CardSwitch] = {}  # model -> its card switch's damping and look-again timer
        self.observe_prep = observe_prep  # each pipeline's template/tokenize timings go here
        self.defaults = defaults or ModelDefaults()  # --tool-call-parser, ... for cards that name none
        self.token_cache = token_cache  # shared by every model's pipeline (DYN_TOKENIZER_CACHE_BYTES)
        self.block_size = block_size  # --kv-cache-block-size: overrides the cards' block size
        # --namespace-prefix wins over --namespace (Dynamo): every namespace is watched, these kept.
        self.namespace = None if namespace_prefix else namespace
        self.namespace_prefix = namespace_prefix
        self.models: dict[str, ModelEntry] = {}
        # Models that had workers and lost them all, with their last entry: requests get 503 (retry later)
        # or wait for a worker (--wait-for-workers-secs), not 404.
        self.retired: dict[str, ModelEntry] = {}
        self.list_retired = False  # --wait-for-workers-secs: a model scaled to zero stays in /v1/models
        self.expected: set[str] = set()  # --model-name under --wait-for-workers-secs: known before any worker
        # (endpoint, instance) -> discovery key -> card (the base model's, then one per LoRA adapter)
        self._cards: dict[tuple[EndpointId, int], dict[str, ModelDeploymentCard]] = {}
        self._pipelines: dict[str, ModelPipeline] = {}  # card checksum -> its loaded tokenizer and template
        self._loading: dict[str, asyncio.Task] = {}  # card checksum -> the load of a held-apart card's tokenizer
        self._instances: dict[tuple[EndpointId, int], InstanceRecord] = {}
        self._tasks: list[asyncio.Task] = []
        self._taken: set[str] = set()  # discovery keys whose events are handled (`caught_up`)
        self._on_change = on_change
        self._changed = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch(records.MDC, self._on_card)))
        self._tasks.append(loop.create_task(self._watch(records.INSTANCES, self._on_instance)))

    async def stop(self) -> None:
        tasks = self._tasks + list(self._loading.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException:
                pass
        for switch in self._switches.values():  # after the watches: no event can arm a timer again
            switch.cancel()
        self._switches.clear()
        self._tasks.clear()
        self._loading.clear()

    async def _watch(self, bucket: str, apply: Callable[[WatchEvent, EndpointId, int], object]) -> None:
        prefix = records.namespace_prefix(bucket, self.namespace)
        while True:
            try:
                async for event in self.store.watch_prefix(prefix):
                    await self._take(bucket, event, apply)
                    if event.kind == "delete":
                        self._taken.discard(event.key)  # bounded by the keys discovery holds
                    else:
                        self._taken.add(event.key)
                    self._changed.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken watch must not stop discovery for good
                log.warning("watch %s failed (%s); retrying", prefix, exc)
                await asyncio.sleep(1.0)

    async def _take(self, bucket: str, event: WatchEvent,
                    apply: Callable[[WatchEvent, EndpointId, int], object]) -> None:
        try:
            eid, iid = records.split_key(bucket, event.key)
        except ValueError:
            return
        if self.namespace_prefix and not eid.namespace.startswith(self.namespace_prefix):
            return
        result = apply(event, eid, iid)
        if asyncio.iscoroutine(result):
            await result

    async def caught_up(self, timeout: float) -> bool:
        """Wait (bounded) until the model cards and instances discovery holds now are taken in (a card's
        tokenizer loaded, or refused as broken): a frontend starting beside others (a rollout's new replica on
        their shared socket) then serves what they serve from its first request. Whether it did in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # what discovery holds is read again each time: a key gone meanwhile is not waited for
            self._changed.clear()
            present: set[str] = set()
            for bucket in (records.MDC, records.INSTANCES):
                present |= set(await self.store.get_prefix(records.namespace_prefix(bucket, self.namespace)))
            remaining = deadline - loop.time()
            if present <= self._taken or remaining <= 0:
                return present <= self._taken
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def _on_card(self, event: WatchEvent, eid: EndpointId, iid: int) -> None:
        # A worker's base card sits at `.../{iid}`, each LoRA adapter's at `.../{iid}/{adapter}`.
        key, cards = event.key, self._cards.setdefault((eid, iid), {})
        if event.kind == "delete":
            card = cards.pop(key, None)
            if card is not None:
                self._drop_worker(card.display_name, iid, retire=card.lora_name is None)
                self._prune_pipelines()
            return
        try:
            card = self.defaults.apply(card_decoder.decode(event.value or b""))
        except Exception as exc:
            log.warning("ignoring malformed model card at %s: %s", event.key, exc)
            return
        if reserved_pool_name(card.display_name):
            log.warning("ignoring the model card at %s: its name %r ends in '/prefill', which names the prefill "
                        "workers of model %r here; serve it under another name", event.key, card.display_name,
                        card.display_name.rpartition("/")[0])
            return
        cards[key] = card
        entry = self.models.get(card.display_name)
        if entry is not None and card.mdcsum and entry.card.mdcsum and card.mdcsum != entry.card.mdcsum:
            if iid in entry.workers:  # it served the other card: its card changed in place
                self._drop_worker(card.display_name, iid)
                entry = self.models.get(card.display_name)  # none left: this card starts the model again
            if entry is not None:
                self._hold_apart(entry, card, iid)
                return
        if entry is None:
            pipeline = await self._pipeline_of(card)
            if pipeline is None:
                return
            entry = self.models.get(card.display_name)  # another card's may have made it meanwhile
            if entry is None:
                entry = ModelEntry(card.display_name, pipeline, card, self.block_size)
                self.models[card.display_name] = entry
                self.retired.pop(card.display_name, None)
                log.info("model %r discovered (context %d, block size %d)", card.display_name,
                         card.context_length, card.kv_cache_block_size)
        if card.mdcsum and entry.card.mdcsum and card.mdcsum != entry.card.mdcsum:
            self._hold_apart(entry, card, iid)  # another card's entry made while this one's tokenizer loaded
            return
        record = self._instances.get((eid, iid))
        entry.workers[iid] = WorkerInfo(iid, eid, card, routable_address(card, record))
        self._bump(entry)

    def _on_instance(self, event: WatchEvent, eid: EndpointId, iid: int) -> None:
        key = (eid, iid)
        if event.kind == "delete":
            self._instances.pop(key, None)
            record = None
        else:
            try:
                record = records.instance_decoder.decode(event.value or b"")
            except Exception as exc:
                log.warning("ignoring malformed instance record at %s: %s", event.key, exc)
                return
            self._instances[key] = record
        for card in self._cards.get(key, {}).values():
            entry = self.models.get(card.display_name)
            if entry is not None and iid in entry.workers:
                old = entry.workers[iid]  # a new object: pool snapshots already handed out stay as they were
                entry.workers[iid] = WorkerInfo(iid, old.endpoint, old.card, routable_address(old.card, record))
                self._bump(entry)
            self._follow_majority(card.display_name)  # a worker of another card came (or went), or revives it

    def _drop_worker(self, name: str, iid: int, retire: bool = True) -> None:
        entry = self.models.get(name)
        if entry is None:
            return
        entry.workers.pop(iid, None)
        self._follow_majority(name)  # the last of the card it followed gone: another card's workers serve
        self._bump(entry)
        if not entry.workers:
            del self.models[name]
            if (switch := self._switches.pop(name, None)) is not None:
                switch.cancel()
            if retire:  # an unloaded LoRA adapter is gone (404), not waiting for workers (503)
                self.retired[name] = entry
            log.info("model %r has no workers left; no longer listed", name)

    # -- a model's workers with more than one card (model_generations.py) -----------------------
    async def _pipeline_of(self, card: ModelDeploymentCard) -> ModelPipeline | None:
        """The card's tokenizer and template, loaded once per card checksum; None if they cannot load."""
        pipeline = self._pipelines.get(card.mdcsum) if card.mdcsum else None
        if pipeline is not None:
            return pipeline
        try:
            pipeline = await asyncio.get_running_loop().run_in_executor(
                None, ModelPipeline, card, self.token_cache, self.defaults.template_for(card))
        except Exception as exc:
            log.error("cannot load tokenizer/template for model %r: %s", card.display_name, exc)
            return None
        pipeline.observe = self.observe_prep
        if card.mdcsum:
            self._pipelines[card.mdcsum] = pipeline
        return pipeline

    def _hold_apart(self, entry: ModelEntry, card: ModelDeploymentCard, iid: int) -> None:
        """Keep a worker of another card out of the entry; its tokenizer loads in the background (a slow load
        must not hold up discovery's other events), then the majority is looked at again."""
        if card.mdcsum in self._pipelines:
            self._follow_majority(card.display_name)
            return
        if card.mdcsum in self._loading:
            return
        log.warning("worker %x serves %r with another model card (checksum %s, served: %s): held apart; its "
                    "card's workers serve once they outnumber the others", iid, card.display_name, card.mdcsum,
                    entry.card.mdcsum)
        task = asyncio.get_running_loop().create_task(self._load_then_follow(card))
        self._loading[card.mdcsum] = task
        task.add_done_callback(lambda _: self._loading.pop(card.mdcsum, None))

    async def _load_then_follow(self, card: ModelDeploymentCard) -> None:
        if await self._pipeline_of(card) is not None:
            self._follow_majority(card.display_name)
            self._changed.set()

    def _follow_majority(self, name: str) -> None:
        """Serve `name` by the card most of its answering workers registered, if that is not the one now, once
        that majority has settled (`CardSwitch`; at once when the served card has no answering worker left)."""
        entry = self.models.get(name)
        gens = generations(self._cards, name)
        if entry is None:
            self._revive(name, gens)
            return
        served_answers = answering(gens.get(entry.card.mdcsum, ()), self._instances) > 0
        switch = self._switches.get(name)
        if switch is None:
            switch = self._switches[name] = CardSwitch(self.card_settle)
        mdcsum, wait = switch.decide(entry.card.mdcsum, successor(entry.card.mdcsum, gens, self._pipelines,
                                                                  self._instances), served_answers)
        if wait is None:
            switch.cancel()  # switched, or no card ahead any more: nothing to look again at
        else:  # look again once the card ahead of the served one has held for its settle time
            switch.arm(wait, lambda: self._follow_majority(name))
        if mdcsum is not None:
            self._serve_card(name, mdcsum, gens, entry)

    def _revive(self, name: str, gens: dict[str, list[Member]]) -> None:
        """`name` has no entry (its served card's workers all went) while workers of another card it held apart
        remained: once that card's tokenizer is loaded and a worker of it answers, it serves the model (the card
        with the most answering workers), instead of leaving the model dark."""
        ready = [(answering(members, self._instances), mdcsum) for mdcsum, members in sorted(gens.items())
                 if mdcsum in self._pipelines]
        count, mdcsum = max(ready, default=(0, ""))
        if count > 0:  # the card switched, with a gap: counted as a switch
            self._serve_card(name, mdcsum, gens)

    def _serve_card(self, name: str, mdcsum: str, gens: dict[str, list[Member]],
                    entry: ModelEntry | None = None) -> None:
        """Serve `name` by the workers of card `mdcsum` (its tokenizer loaded): `entry` follows that card, or (None:
        the model had no entry left) a new entry is listed. A card switch either way (`on_card_switch`)."""
        members, old = gens[mdcsum], entry.card.mdcsum if entry is not None else None
        card, pipeline = _answering_card(members), self._pipelines[mdcsum]
        if entry is None:
            entry = self.models[name] = ModelEntry(name, pipeline, card, self.block_size)
            self.retired.pop(name, None)
        else:
            entry.adopt(card, pipeline, self.block_size)
        entry.workers = self._workers_of(members)
        self._bump(entry)
        self._changed.set()
        if self.on_card_switch is not None:
            self.on_card_switch(name)
        count = answering(members, self._instances)
        if old is None:
            log.warning("model %r served again, by the workers of model card %s (%d answering)", name, mdcsum, count)
        else:
            log.warning("model %r now served by the workers of model card %s (%d answering; %d left with card %s)",
                        name, mdcsum, count, answering(gens.get(old, ()), self._instances), old)

    def _workers_of(self, members: list[Member]) -> dict[int, WorkerInfo]:
        return {iid: WorkerInfo(iid, eid, c, routable_address(c, self._instances.get((eid, iid))))
                for eid, iid, c in members}

    def _prune_pipelines(self) -> None:
        """Drop the tokenizers of cards no worker has any more."""
        live = {c.mdcsum for by_key in self._cards.values() for c in by_key.values()}
        for mdcsum in [m for m in self._pipelines if m not in live]:
            del self._pipelines[mdcsum]

    def _bump(self, entry: ModelEntry) -> None:
        entry.version += 1
        if self._on_change is not None:
            self._on_change(entry)

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def cards(self) -> dict[str, dict]:
        """Every known model's card served (None when it has no entry: retired) and the cards held apart beside it
        (a rolling update in progress, or one stuck), for /health."""
        names = set(self.models) | set(self.retired) | {c.display_name for by in self._cards.values()
                                                         for c in by.values()}
        out = {}
        for name in sorted(names):
            entry = self.models.get(name)
            served = entry.card.mdcsum if entry is not None else None
            out[name] = {"served": served, "held_apart": held_apart(generations(self._cards, name), served or "",
                                                                    self._pipelines, self._instances)}
        return out

    def _registered(self) -> list[tuple[EndpointId, int]]:
        """Workers with a card and an instance, served or held apart (another card of a served model)."""
        return [key for key, cards in self._cards.items() if cards and key in self._instances]

    def worker_ids(self) -> set[int]:
        """Every worker serving some model now, or registered beside one (a rolling update's other card)."""
        return {iid for entry in self.models.values() for iid in entry.workers} | {iid for _, iid in self._registered()}

    def worker_addresses(self) -> set[str]:
        """The request-plane address of every worker serving some model now, or registered beside one."""
        return {w.address for entry in self.models.values() for w in entry.workers.values() if w.address} | \
            {self._instances[key].address for key in self._registered() if self._instances[key].address}

    def listed(self) -> list[ModelEntry]:
        return [entry for entry in self.models.values() if entry.decode_workers()]

    def catalog(self) -> list[ModelEntry]:
        """What /v1/models lists: the models with serving workers, and (under --wait-for-workers-secs)
        those whose workers are all gone, which a request still reaches by waiting for one."""
        if not self.list_retired:
            return self.listed()
        # every known model, also one whose last worker is leaving (instance gone, card not yet)
        return list(self.models.values()) + list(self.retired.values())

    def held(self) -> list[str]:
        """The models a request still reaches by waiting (--wait-for-workers-secs) that have no worker now:
        those whose workers are gone and those expected that none registered yet."""
        names = {e.name for e in self.catalog() if not e.decode_workers()} | set(self.awaited())
        return sorted(names)

    def knows(self, name: str) -> bool:
        """Whether `name` is a model of this frontend, served now or not: it has (had) workers or is expected."""
        return name in self.models or name in self.retired or name in self.expected

    def awaited(self) -> list[str]:
        """Expected models no worker has registered yet (listed under --wait-for-workers-secs)."""
        return sorted(n for n in self.expected if n not in self.models and n not in self.retired) \
            if self.list_retired else []

    def has_workers(self, name: str) -> bool:
        """Whether some worker can answer a request for `name` end to end now."""
        entry = self.models.get(name)
        return entry is not None and bool(entry.decode_workers())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return predicate()
        return True


def _answering_card(members: list[Member]) -> ModelDeploymentCard:
    """The card of a generation's first worker that answers requests (not a prefill worker): the one it serves by."""
    return next(c for _, _, c in members if c.worker_type != WorkerType.PREFILL)

"""ModelManager over the embedded in-process discovery store (`mem`, a real KeyValueStore):
a model is listed only while some worker has both its card and a live instance, whatever
order the two keys arrive in; a worker with another card checksum is not routed to until its card's
workers outnumber the served card's (then they serve instead); a model
that lost all its workers is retired (503, not 404) until one comes back."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from dynamo.frontend.model_manager import ModelManager
from dynamo.llm.model_card import WorkerType, build_card, card_record
from dynamo.router.policy import Role
from dynamo.runtime import records
from dynamo.runtime.discovery import mem
from dynamo.runtime.discovery.mem import MemStore
from dynamo.runtime.records import EndpointId, InstanceRecord

MODEL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-model"
EID = EndpointId("dynamo", "backend", "generate")
PREFILL_EID = EndpointId("dynamo", "prefill", "generate")


class Discovery:
    """Writes what workers register, the way they register it; reads what the manager made of it."""

    def __init__(self, store: MemStore, manager: ModelManager) -> None:
        self.store, self.manager = store, manager

    async def card(self, iid: int, eid: EndpointId = EID, **kw) -> None:
        card = build_card(MODEL_DIR, name=kw.pop("name", "tiny"), block_size=kw.pop("block_size", 16), **kw)
        await self.store.put(records.mdc_key(eid, iid), card_record(card, eid.namespace, eid.component,
                                                                     eid.endpoint, iid))

    async def instance(self, iid: int, eid: EndpointId = EID) -> None:
        record = InstanceRecord(namespace=eid.namespace, component=eid.component, endpoint=eid.endpoint,
                                instance_id=iid, transport={"tcp": f"127.0.0.1:{10000 + iid}"})
        await self.store.put(records.instance_key(eid, iid), msgspec.json.encode(record))

    async def settle(self, predicate, what: str) -> None:
        assert await self.manager.wait_for(predicate, timeout=30), what

    def listed(self) -> list[str]:
        return [entry.name for entry in self.manager.listed()]


@asynccontextmanager
async def settling(name: str, settle: float, **kw):
    """A manager over its own embedded store whose card switches settle for `settle` seconds."""
    store = MemStore(name=name)
    await store.start()
    manager = ModelManager(store, "dynamo", card_settle=settle, **kw)
    await manager.start()
    try:
        yield Discovery(store, manager)
    finally:
        await manager.stop()
        await store.close()
        mem.reset(name)


@pytest.fixture
async def disco(request):
    async with settling(f"mm-{request.node.name}", 0) as discovery:  # a majority switches at once
        yield discovery


@pytest.mark.parametrize("card_first", [True, False])
async def test_listed_once_card_and_instance_are_both_there(disco, card_first):
    first, second = (disco.card, disco.instance) if card_first else (disco.instance, disco.card)
    await first(1)
    await asyncio.sleep(0.2)  # whatever arrived alone must not list the model
    assert disco.listed() == []
    await second(1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "model listed")
    workers = disco.manager.get("tiny").pool(Role.DECODE).workers
    assert [(w.instance_id, w.address) for w in workers] == [(1, "127.0.0.1:10001")]


async def test_a_worker_with_another_card_checksum_is_not_routed_to(disco):
    await first_worker(disco)
    await disco.card(2, block_size=32)  # same name, other block size: another card
    await disco.instance(2)
    await asyncio.sleep(0.5)
    assert [w.instance_id for w in disco.manager.get("tiny").decode_workers()] == [1]


async def first_worker(disco) -> None:
    """Worker 1 serves "tiny" by a block-16 card."""
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "first worker")


def served(disco) -> tuple[int, list[int]]:
    entry = disco.manager.get("tiny")
    return entry.block_size, sorted(w.instance_id for w in entry.decode_workers())


async def test_another_cards_workers_serve_once_they_outnumber_the_served_ones(disco):
    """A rolling update that changed the card (here the block size): the old card's workers serve until the new
    card's outnumber them; the two are never mixed; the pipeline and block size follow the card served."""
    await first_worker(disco)
    await disco.card(2, block_size=32)
    await disco.instance(2)
    await asyncio.sleep(0.5)
    assert served(disco) == (16, [1])  # a tie keeps the card served now
    await disco.card(3, block_size=32)
    await disco.instance(3)
    await disco.settle(lambda: served(disco) == (32, [2, 3]), "the new card's workers serve")
    assert disco.manager.get("tiny").pool(Role.DECODE).block_size == 32


async def test_the_last_worker_of_the_served_card_leaving_hands_the_model_to_another_card(disco):
    await first_worker(disco)
    await disco.card(2, block_size=32)
    await disco.instance(2)
    await asyncio.sleep(0.5)
    await disco.store.delete(records.instance_key(EID, 1))
    await disco.store.delete(records.mdc_key(EID, 1))
    await disco.settle(lambda: served(disco) == (32, [2]), "the other card's worker serves")
    assert disco.listed() == ["tiny"] and "tiny" not in disco.manager.retired


async def test_prefill_workers_alone_of_another_card_do_not_take_the_model(disco):
    await first_worker(disco)
    for iid in (7, 8):
        await disco.card(iid, PREFILL_EID, block_size=32, worker_type=WorkerType.PREFILL)
        await disco.instance(iid, PREFILL_EID)
    await disco.card(4)  # a later event must still land: the card watch did not fail on the prefill ones
    await disco.instance(4)
    await disco.settle(lambda: served(disco) == (16, [1, 4]), "the served card's second worker")
    assert disco.manager.get("tiny").prefill_workers() == [] and disco.manager.worker_ids() >= {1, 4, 7, 8}


async def test_a_disaggregated_model_moves_only_to_a_card_with_prefill_workers(disco):
    await disco.card(1)
    await disco.instance(1)
    await disco.card(7, PREFILL_EID, worker_type=WorkerType.PREFILL)
    await disco.instance(7, PREFILL_EID)
    await disco.settle(lambda: disco.listed() == ["tiny"], "served, disaggregated")
    for iid in (2, 3):
        await disco.card(iid, block_size=32)
        await disco.instance(iid)
    await asyncio.sleep(0.5)
    assert served(disco) == (16, [1])  # a majority of decode workers but no prefill worker of theirs
    await disco.card(8, PREFILL_EID, block_size=32, worker_type=WorkerType.PREFILL)
    await disco.instance(8, PREFILL_EID)
    await disco.settle(lambda: served(disco) == (32, [2, 3]), "the new card, prefill and decode, serves")
    assert [w.instance_id for w in disco.manager.get("tiny").prefill_workers()] == [8]


async def test_workers_of_another_card_without_an_instance_do_not_count(disco):
    await first_worker(disco)
    for iid in (2, 3):
        await disco.card(iid, block_size=32)  # registered cards, no serving instance yet
    await asyncio.sleep(0.5)
    assert served(disco) == (16, [1])
    for iid in (2, 3):
        await disco.instance(iid)
    await disco.settle(lambda: served(disco) == (32, [2, 3]), "they serve once their instances are there")


async def test_a_worker_whose_card_changes_in_place_serves_by_its_new_card(disco):
    await first_worker(disco)
    await disco.card(1, block_size=32)  # the same worker re-registers another card
    await disco.settle(lambda: served(disco) == (32, [1]), "served by its new card")
    assert disco.listed() == ["tiny"]


async def test_losing_every_worker_retires_the_model_until_one_returns(disco):
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "listed")
    await disco.store.delete(records.instance_key(EID, 1))
    await disco.settle(lambda: disco.listed() == [], "unlisted without an instance")
    assert "tiny" not in disco.manager.retired  # its card is still there: only not routable
    await disco.store.delete(records.mdc_key(EID, 1))
    await disco.settle(lambda: "tiny" in disco.manager.retired, "retired")
    assert disco.manager.get("tiny") is None
    await disco.card(3)
    await disco.instance(3)
    await disco.settle(lambda: disco.listed() == ["tiny"], "back")
    assert "tiny" not in disco.manager.retired


async def test_a_retired_model_stays_in_the_catalog_only_when_its_requests_wait(disco):
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: disco.manager.has_workers("tiny"), "served")
    await disco.store.delete(records.mdc_key(EID, 1))
    await disco.settle(lambda: "tiny" in disco.manager.retired, "retired")
    assert not disco.manager.has_workers("tiny")
    assert disco.manager.knows("tiny") and disco.manager.retired["tiny"].card.display_name == "tiny"
    assert disco.manager.catalog() == []
    disco.manager.list_retired = True  # --wait-for-workers-secs
    assert [e.name for e in disco.manager.catalog()] == ["tiny"]
    assert disco.listed() == []  # /health still counts only models with a worker


async def test_an_expected_model_is_known_and_awaited_until_a_worker_registers_it(disco):
    manager = disco.manager
    manager.expected.add("tiny")  # --model-name under --wait-for-workers-secs
    assert manager.knows("tiny") and not manager.knows("other")
    assert manager.awaited() == []  # listed only when its requests wait
    manager.list_retired = True
    assert manager.awaited() == ["tiny"]
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: manager.has_workers("tiny"), "served")
    assert manager.awaited() == [] and [e.name for e in manager.catalog()] == ["tiny"]  # listed once, not twice


async def test_prefill_workers_form_their_own_pool_and_never_list_a_model(disco):
    await disco.card(7, PREFILL_EID, worker_type=WorkerType.PREFILL)
    await disco.instance(7, PREFILL_EID)
    await disco.settle(lambda: disco.manager.get("tiny") is not None and
                       disco.manager.get("tiny").prefill_workers(), "prefill worker seen")
    assert disco.listed() == []  # nothing can answer a request end to end yet
    entry = disco.manager.get("tiny")
    assert [w.instance_id for w in entry.pool(Role.PREFILL).workers] == [7]
    assert entry.pool(Role.DECODE).workers == ()
    await disco.card(8)
    await disco.instance(8)
    await disco.settle(lambda: disco.listed() == ["tiny"], "decode worker")
    assert [w.instance_id for w in entry.pool(Role.DECODE).workers] == [8]


async def test_pool_snapshots_already_handed_out_do_not_change(disco):
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "listed")
    entry = disco.manager.get("tiny")
    before = entry.pool(Role.DECODE)
    await disco.card(2)
    await disco.instance(2)
    await disco.settle(lambda: len(entry.decode_workers()) == 2, "second worker")
    after = entry.pool(Role.DECODE)
    assert [w.instance_id for w in before.workers] == [1] and after.version > before.version
    assert [w.instance_id for w in after.workers] == [1, 2]


async def test_a_model_named_like_another_models_prefill_pool_is_refused(disco, caplog):
    # "tiny/prefill" would share routing state (KV router, queue, turns) with model tiny's prefill workers.
    await disco.card(3, name="tiny/prefill")
    await disco.instance(3)
    await disco.card(8)
    await disco.instance(8)
    await disco.settle(lambda: disco.listed() == ["tiny"], "the other model listed")
    assert disco.manager.get("tiny/prefill") is None
    assert "ends in '/prefill'" in caplog.text and "serve it under another name" in caplog.text

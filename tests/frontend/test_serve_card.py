"""`ModelManager._serve_card`, shared by a card switch (`_follow_majority`) and a model served again after its
card's workers all left (`_revive`), driven through the manager's own state (no discovery store): the workers
installed, the version bumped, the switch told and logged. And `_revive`'s pick on a tie, which is why it is not
`model_generations.successor("", ...)`: the pick takes the greatest checksum among the tied cards, `successor` the
least."""

from __future__ import annotations

import logging

from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.model_generations import generations, successor
from dynamo.frontend.model_manager import ModelManager
from dynamo.llm.model_card import WorkerType
from dynamo.runtime.records import EndpointId, InstanceRecord
from tests.frontend.helpers_cards import card


def manager(cards: dict[int, str], loaded: set[str], switched: list[str]) -> ModelManager:
    """A manager of model "m" whose workers (instance id -> card checksum) are all up; `loaded`: the checksums
    whose tokenizer is loaded (a stand-in pipeline: nothing tokenizes)."""
    m = ModelManager(None, "dynamo", card_settle=0, on_card_switch=switched.append)  # type: ignore[arg-type]
    for iid, mdcsum in cards.items():
        eid = EndpointId("dynamo", "backend", "generate")
        m._cards[(eid, iid)] = {f"k{iid}": card(mdcsum)}
        m._instances[(eid, iid)] = InstanceRecord(namespace="dynamo", component="backend", endpoint="generate",
                                                  instance_id=iid, transport={"tcp": f"127.0.0.1:{iid}"})
    m._pipelines = {mdcsum: f"pipeline-{mdcsum}" for mdcsum in loaded}  # type: ignore[misc]
    return m


def test_a_card_switch_installs_the_new_cards_workers(caplog):
    switched: list[str] = []
    m = manager({1: "old", 2: "new", 3: "new"}, {"old", "new"}, switched)
    entry = m.models["m"] = ModelEntry("m", "pipeline-old", card("old"))  # type: ignore[arg-type]
    entry.workers = m._workers_of(generations(m._cards, "m")["old"])
    with caplog.at_level(logging.WARNING, "dynamo.frontend.model_manager"):
        m._follow_majority("m")
    assert m.models["m"] is entry and entry.card.mdcsum == "new" and entry.pipeline == "pipeline-new"
    assert set(entry.workers) == {2, 3} and entry.workers[2].address == "127.0.0.1:2"
    assert entry.version == 1 and switched == ["m"] and m._changed.is_set()
    assert "model 'm' now served by the workers of model card new (2 answering; 1 left with card old)" in caplog.text


def test_a_model_with_no_entry_is_served_again_by_the_card_with_most_answering_workers(caplog):
    switched: list[str] = []
    m = manager({1: "a", 2: "b", 3: "b", 4: "c", 5: "c", 6: "c"}, {"a", "b"}, switched)  # "c" not loaded
    m.retired["m"] = ModelEntry("m", "pipeline-x", card("x"))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "dynamo.frontend.model_manager"):
        m._follow_majority("m")
    entry = m.models["m"]
    assert entry.card.mdcsum == "b" and set(entry.workers) == {2, 3} and entry.version == 1
    assert "m" not in m.retired and switched == ["m"] and m._changed.is_set()
    assert "model 'm' served again, by the workers of model card b (2 answering)" in caplog.text


def test_no_loaded_card_with_an_answering_worker_leaves_the_model_dark():
    switched: list[str] = []
    m = manager({1: "a"}, set(), switched)
    m._follow_majority("m")
    assert "m" not in m.models and switched == []
    prefill_only = manager({1: "a"}, {"a"}, switched)
    eid = EndpointId("dynamo", "backend", "generate")
    prefill_only._cards[(eid, 1)] = {"k1": card("a", WorkerType.PREFILL)}
    prefill_only._follow_majority("m")
    assert "m" not in prefill_only.models and switched == []


def test_on_a_tie_the_revived_card_is_the_greatest_checksum_not_successors_pick():
    m = manager({1: "a", 2: "b"}, {"a", "b"}, [])
    gens = generations(m._cards, "m")
    assert successor("", gens, m._pipelines, m._instances) == "a"  # the first of the tied cards
    m._follow_majority("m")
    assert m.models["m"].card.mdcsum == "b"  # max((1, "a"), (1, "b")): the last

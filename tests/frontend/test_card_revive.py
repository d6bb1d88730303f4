"""A model whose served card's workers all leave while another card's workers were held apart is not left dark:
once that card's tokenizer is loaded and one of its workers answers, it serves the model (ModelManager over the
embedded discovery store). Whatever the order: the other card's instance arriving after the old card left, or its
tokenizer still loading when the old card left. /health's `model_cards` shows the model meanwhile, unserved."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from dynamo.runtime import records
from tests.frontend.test_model_manager import EID, Discovery, disco  # noqa: F401  (a fixture)


def block_size(disco: Discovery) -> int | None:
    entry = disco.manager.get("tiny")
    return entry.block_size if entry is not None else None


def held_apart(disco: Discovery) -> list[tuple[int, bool]]:
    """(answering workers, tokenizer loaded) of each card held apart beside the one served."""
    return [(c["workers"], c["ready"]) for c in disco.manager.cards().get("tiny", {}).get("held_apart", [])]


async def old_card_leaves(disco: Discovery) -> None:
    await disco.store.delete(records.instance_key(EID, 1))
    await disco.store.delete(records.mdc_key(EID, 1))


async def test_the_other_cards_worker_arriving_after_the_old_card_left_serves_the_model(disco):
    await disco.card(1)
    await disco.instance(1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "the old card serves")
    await disco.card(2, block_size=32)  # the new card's worker registers its card; its instance comes later
    await disco.settle(lambda: held_apart(disco) == [(0, True)], "its tokenizer loaded")
    await old_card_leaves(disco)
    await disco.settle(lambda: "tiny" in disco.manager.retired, "no worker answers: retired")
    (held,) = disco.manager.cards()["tiny"]["held_apart"]
    assert disco.manager.cards()["tiny"]["served"] is None and (held["workers"], held["ready"]) == (0, True)
    await disco.instance(2)
    await disco.settle(lambda: disco.listed() == ["tiny"], "the new card's worker serves the model")
    assert block_size(disco) == 32 and "tiny" not in disco.manager.retired
    assert disco.manager.cards()["tiny"] == {"served": disco.manager.get("tiny").card.mdcsum, "held_apart": []}


async def test_the_other_cards_tokenizer_still_loading_when_the_old_card_left_serves_the_model(disco):
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1)  # the loop's default executor: where tokenizers load
    loop.set_default_executor(pool)
    gate = threading.Event()
    try:
        await disco.card(1)
        await disco.instance(1)
        await disco.settle(lambda: disco.listed() == ["tiny"], "the old card serves")
        held = loop.run_in_executor(None, gate.wait, 30)  # the next tokenizer load waits behind this
        await disco.card(2, block_size=32)
        await disco.instance(2)
        await disco.settle(lambda: held_apart(disco) == [(1, False)],
                           "the new card's worker, held apart, its tokenizer still loading")
        await old_card_leaves(disco)
        await disco.settle(lambda: disco.listed() == [], "the old card's worker gone")
        gate.set()
        await held
        await disco.settle(lambda: disco.listed() == ["tiny"], "the new card serves once its tokenizer loaded")
        assert block_size(disco) == 32
    finally:
        gate.set()
        pool.shutdown(wait=False)

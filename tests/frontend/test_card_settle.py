"""ModelManager's card switch with a settle time (--model-card-settle-secs), over the embedded discovery store:
a new card's majority takes over only once it has held, and at once when the served card's last worker goes;
after a switch the model's think markers are the new card's (its reasoning parser); `cards` reports what is
held apart (the /health rollout view)."""

from __future__ import annotations

import asyncio
import time

import pytest

from dynamo.frontend.config import parse_frontend_args
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.model_routes import health_report
from dynamo.llm.model_card import RuntimeConfig
from dynamo.runtime import records
from tests.frontend.test_model_manager import EID, Discovery, disco, settling  # noqa: F401  (a fixture)

SETTLE = 1.5


async def worker(disco: Discovery, iid: int, **kw) -> None:
    await disco.card(iid, **kw)
    await disco.instance(iid)


def block_size(disco: Discovery) -> int:
    return disco.manager.get("tiny").block_size


def held_apart(disco: Discovery) -> list[dict]:
    return disco.manager.cards().get("tiny", {}).get("held_apart", [])


async def test_a_new_cards_majority_serves_only_after_the_settle_time(request):
    switched: list[str] = []  # what dynamo_frontend_model_card_switches counts
    async with settling(request.node.name, SETTLE, on_card_switch=switched.append) as slow:
        await worker(slow, 1)
        await slow.settle(lambda: slow.listed() == ["tiny"], "the first worker serves")
        await worker(slow, 2, block_size=32)
        await slow.card(3, block_size=32)
        await slow.settle(lambda: [(c["workers"], c["ready"]) for c in held_apart(slow)] == [(1, True)],
                          "the new card's first worker, held apart, its tokenizer loaded")
        before = time.monotonic()  # the new card cannot outnumber the served one before this
        await slow.instance(3)
        await slow.settle(lambda: block_size(slow) == 32, "the new card serves once settled")
        assert time.monotonic() - before >= SETTLE  # not at once: its majority held for the settle time first
        assert switched == ["tiny"]
        served = slow.manager.cards()["tiny"]
        assert served["served"] == slow.manager.get("tiny").card.mdcsum and served["held_apart"][0]["workers"] == 1


async def test_a_served_card_left_without_workers_is_replaced_at_once(request):
    async with settling(request.node.name, 60.0) as slow:  # a settle time far past the wait below
        await worker(slow, 1)
        await slow.settle(lambda: slow.listed() == ["tiny"], "the first worker serves")
        await worker(slow, 2, block_size=32)
        await slow.settle(lambda: held_apart(slow) and held_apart(slow)[0]["ready"], "loaded")
        body = health_report(slow.manager.listed(), {}, cards=slow.manager.cards())
        assert body["model_cards"]["tiny"]["held_apart"] == [
            {"checksum": held_apart(slow)[0]["checksum"], "workers": 1, "ready": True}]
        await slow.store.delete(records.instance_key(EID, 1))  # the served card's only worker goes
        await slow.settle(lambda: block_size(slow) == 32, "the other card serves")  # no settle time waited out


async def test_stop_cancels_a_pending_look_again(request):
    """A majority waiting out its settle time has a timer armed; the manager's stop cancels it (nothing switches,
    nothing runs, after the manager stopped)."""
    settle = 2.0
    async with settling(request.node.name, settle) as slow:
        await worker(slow, 1)
        await slow.settle(lambda: slow.listed() == ["tiny"], "the first worker serves")
        await slow.card(2, block_size=32)
        await slow.card(3, block_size=32)
        await slow.settle(lambda: held_apart(slow) and held_apart(slow)[0]["ready"], "loaded")
        before = time.monotonic()
        await slow.instance(2)
        await slow.instance(3)
        await slow.settle(lambda: [c["workers"] for c in held_apart(slow)] == [2], "a majority, settling")
        await slow.manager.stop()
        if time.monotonic() - before >= settle:
            pytest.skip("the box was too busy to stop the manager within the settle time")
        await asyncio.sleep(settle + 0.5)
        assert block_size(slow) == 16  # the look-again never ran


async def test_after_a_switch_the_think_markers_are_the_new_cards(disco):
    await worker(disco, 1)
    await disco.settle(lambda: disco.listed() == ["tiny"], "the first worker serves")
    entry = disco.manager.get("tiny")
    assert entry.think_markers is None  # its card names no reasoning parser (and the property is cached)
    for iid in (2, 3):
        await worker(disco, iid, block_size=32, runtime_config=RuntimeConfig(reasoning_parser="qwen3"))
    await disco.settle(lambda: entry.block_size == 32, "the new card serves")
    markers = entry.think_markers
    assert markers is not None
    assert entry.pipeline.tokenizer.decode(markers.start) == "<think>"


def test_the_settle_time_is_a_frontend_setting_with_its_flag_and_env_twin():
    assert parse_frontend_args([], {})[0].model_card_settle_secs == 3.0
    assert parse_frontend_args(["--model-card-settle-secs", "0.5"], {})[0].model_card_settle_secs == 0.5
    assert parse_frontend_args([], {"DYN_MODEL_CARD_SETTLE_SECS": "7"})[0].model_card_settle_secs == 7.0
    for bad in ("-1", "nan"):
        with pytest.raises((ValueError, SystemExit)):
            parse_frontend_args(["--model-card-settle-secs", bad], {})
    assert ModelManager(None, "dynamo").card_settle == 3.0  # type: ignore[arg-type]  # one default: the flag's

"""The SGLang adapter's request translation, over the STAND-IN of `sgl.Engine` (tests/worker/standins.py):
agent-hint priorities reach SGLang's scheduler only when priority scheduling is on, in its convention."""

from __future__ import annotations

import pytest

from dynamo.llm.protocol import STRICT_TIER, PreprocessedRequest, RoutingHints, StopConditions
from dynamo.sglang.adapter import SglangAdapter
from dynamo.sglang.args import DynamoSglangArgs
from tests.worker import standins


def adapter(**flags) -> SglangAdapter:
    sa = standins.SglangServerArgsStandIn(model_path="m", **flags)
    built = SglangAdapter(DynamoSglangArgs(), sa, engine_factory=standins.SglangEngineStandIn)
    built.engine, built.context_length = standins.SglangEngineStandIn(sa), 4096
    return built


async def sent_priority(subject: SglangAdapter, hints: RoutingHints | None):
    req = PreprocessedRequest(request_id="r", model="m", token_ids=[5, 6, 7], routing=hints,
                              stop_conditions=StopConditions(max_tokens=1, ignore_eos=True))
    outs = [out async for out in subject.generate(req, f"r{len(subject.engine.calls)}")]
    assert outs[-1].finish_reason is not None
    return subject.engine.calls[-1]["priority"]


@pytest.mark.asyncio
async def test_priority_reaches_sglang_only_under_priority_scheduling():
    assert await sent_priority(adapter(), RoutingHints(priority=3)) is None  # else SGLang may abort it
    on = adapter(enable_priority_scheduling=True)
    assert await sent_priority(on, RoutingHints(priority=3)) == 3
    assert await sent_priority(on, RoutingHints(strict_priority=2)) == 2 * STRICT_TIER
    assert await sent_priority(on, RoutingHints(backend_instance_id=1)) is None  # no hint: SGLang's default
    assert await sent_priority(on, None) is None


@pytest.mark.asyncio
async def test_low_values_first_flips_the_sign():
    low_first = adapter(enable_priority_scheduling=True, schedule_low_priority_values_first=True)
    assert await sent_priority(low_first, RoutingHints(priority=3)) == -3


@pytest.mark.asyncio
async def test_a_salted_request_is_refused_not_served_in_the_shared_cache():
    subject = adapter()
    req = PreprocessedRequest(request_id="r", model="m", token_ids=[5, 6, 7], routing=RoutingHints(cache_salt="t1"),
                              stop_conditions=StopConditions(max_tokens=1, ignore_eos=True))
    with pytest.raises(ValueError, match="cache_salt"):  # the harness answers a ValueError with a 400
        [out async for out in subject.generate(req, "r0")]
    assert not subject.engine.calls  # it never reached the engine

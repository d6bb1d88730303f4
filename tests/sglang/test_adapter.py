"""The SGLang adapter's request translation, over the STAND-IN of `sgl.Engine` (tests/worker/standins.py):
agent-hint priorities reach SGLang's scheduler only when priority scheduling is on, in its convention."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from dynamo.llm.media import wire_media
from dynamo.llm.protocol import (STRICT_TIER, GuidedDecodingOptions, PreprocessedRequest, RoutingHints,
                                  SamplingOptions, StopConditions)
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


def _image_request(url: str) -> PreprocessedRequest:
    return PreprocessedRequest(request_id="r", model="m", token_ids=[5, 6, 7], multi_modal_data=wire_media([url]),
                               stop_conditions=StopConditions(max_tokens=1, ignore_eos=True))


@pytest.mark.asyncio
async def test_an_aggregated_multimodal_worker_hands_sglang_decoded_images():
    """SGLang's --enable-multimodal: the images are loaded here (the DYN_MM_* policy) and reach
    `async_generate(image_data=...)` as PIL images; the card says the worker reads them."""
    out = io.BytesIO()
    Image.new("RGB", (9, 4), (1, 2, 3)).save(out, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    subject = adapter(enable_multimodal=True)
    assert subject.images is not None
    outs = [o async for o in subject.generate(_image_request(url), "r0")]
    assert outs[-1].finish_reason is not None
    [image] = subject.engine.calls[-1]["image_data"]
    assert (image.size, image.mode) == ((9, 4), "RGB")
    with pytest.raises(ValueError, match="not allowed"):  # the policy applies before the engine sees it
        [o async for o in subject.generate(_image_request("http://10.0.0.1/a.png"), "r1")]
    await subject.images.close()


@pytest.mark.asyncio
async def test_without_the_flag_or_when_disaggregated_images_are_refused():
    for subject in (adapter(), adapter(enable_multimodal=True, disaggregation_mode="decode")):
        assert subject.images is None
        with pytest.raises(ValueError, match="reads no images"):
            [o async for o in subject.generate(_image_request("https://example.com/a.png"), "r0")]
        assert not subject.engine.calls


@pytest.mark.asyncio
async def test_structured_output_reaches_sglangs_sampling_params():
    """response_format / guided_* / tool_choice required: SGLang's json_schema, regex or ebnf, never dropped."""
    subject = adapter()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    req = PreprocessedRequest(request_id="g", model="m", token_ids=[5, 6, 7],
                              stop_conditions=StopConditions(max_tokens=1, ignore_eos=True),
                              sampling_options=SamplingOptions(guided_decoding=GuidedDecodingOptions(json=schema)))
    assert [out async for out in subject.generate(req, "g")][-1].finish_reason is not None
    assert json.loads(subject.engine.calls[-1]["sampling_params"]["json_schema"]) == schema

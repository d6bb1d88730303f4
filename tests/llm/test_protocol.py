"""Request-protocol helpers that engines share, and the finish reasons' wire spelling."""

import msgspec
import pytest

from dynamo.llm.protocol import (BACKGROUND_TIER, STRICT_TIER, FinishReason, LLMEngineOutput, RoutingHints, engine_priority,
                                 output_decoder)


def test_engine_priority_runs_higher_hints_first_in_either_convention():
    low, high = RoutingHints(priority=1), RoutingHints(priority=7.6)
    assert engine_priority(high, lower_first=False) == 8 > engine_priority(low, lower_first=False) == 1
    assert engine_priority(high, lower_first=True) == -8 < engine_priority(low, lower_first=True) == -1


def test_strict_tier_outranks_any_soft_priority():
    tiered, soft = RoutingHints(strict_priority=1, priority=-5), RoutingHints(priority=10**9)
    assert engine_priority(tiered, lower_first=False) == STRICT_TIER - 5
    assert engine_priority(tiered, lower_first=False) > engine_priority(soft, lower_first=False)
    assert engine_priority(tiered, lower_first=True) < engine_priority(soft, lower_first=True)


def test_background_work_runs_after_the_engine_default_in_either_convention():
    batch = RoutingHints(strict_priority=BACKGROUND_TIER, priority=100)
    assert engine_priority(batch, lower_first=False) < 0 < engine_priority(batch, lower_first=True)


def test_no_hints_is_the_engine_default():
    assert engine_priority(None, lower_first=True) == 0
    assert engine_priority(RoutingHints(backend_instance_id=3), lower_first=False) == 0


# -- finish reasons on the wire ------------------------------------------------------------------
# NVIDIA Dynamo's `FinishReason` serde names, plus the spellings its workers also send.
DYNAMO_FINISH_REASONS = {
    "eos": FinishReason.EOS, "length": FinishReason.LENGTH, "stop": FinishReason.STOP,
    "error": FinishReason.ERROR, "cancelled": FinishReason.CANCELLED, "content_filter": FinishReason.CONTENT_FILTER,
    "abort": FinishReason.CANCELLED, "error: engine died": FinishReason.ERROR,
}


@pytest.mark.parametrize("reason", list(FinishReason))
@pytest.mark.parametrize("codec", [msgspec.msgpack, msgspec.json])
def test_finish_reason_travels_as_its_plain_string(reason, codec):
    out = LLMEngineOutput(token_ids=[1], finish_reason=reason)
    data = codec.encode(out)
    assert data == codec.encode(LLMEngineOutput(token_ids=[1], finish_reason=reason.value))
    back = codec.decode(data, type=LLMEngineOutput)
    assert type(back.finish_reason) is str and back.finish_reason == reason
    assert FinishReason(back.finish_reason) is reason


@pytest.mark.parametrize("raw, want", DYNAMO_FINISH_REASONS.items())
def test_dynamo_finish_reasons_decode(raw, want):
    data = msgspec.msgpack.encode({"token_ids": [], "finish_reason": raw})
    assert FinishReason(output_decoder.decode(data).finish_reason) is want


def test_an_unknown_finish_reason_still_decodes_but_is_no_member():
    # A newer peer's reason must not fail the whole output: the field is `str` on the wire.
    out = output_decoder.decode(msgspec.msgpack.encode({"finish_reason": "tool_budget"}))
    assert out.finish_reason == "tool_budget"
    with pytest.raises(ValueError):
        FinishReason(out.finish_reason)


def test_a_structural_tag_travels_to_the_worker_as_dynamos_field():
    """tool_choice auto with tools and a response_format (frontend/tool_guidance.py): the constraint reaches the
    worker whole, under NVIDIA Dynamo's `guided_decoding.structural_tag`."""
    from dynamo.llm.protocol import (GuidedDecodingOptions, PreprocessedRequest, SamplingOptions, request_decoder,
                                     request_encoder)

    tag = {"type": "structural_tag", "format": {"type": "or", "elements": [
        {"type": "json_schema", "json_schema": {"type": "object"}}, {"type": "const_string", "value": "<tool_call>"}]}}
    sent = PreprocessedRequest(request_id="r", model="m", token_ids=[1], sampling_options=SamplingOptions(
        guided_decoding=GuidedDecodingOptions(structural_tag=tag)))
    wire = request_encoder.encode(sent)
    assert msgspec.msgpack.decode(wire)["sampling_options"]["guided_decoding"] == {"structural_tag": tag}
    assert request_decoder.decode(wire).sampling_options.guided_decoding.structural_tag == tag

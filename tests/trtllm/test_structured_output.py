"""Structured output on the TensorRT-LLM worker (adapter over the STAND-IN of its LLM API, tests/worker/standins.py):
the constraint becomes TensorRT-LLM's GuidedDecodingParams when the worker runs a grammar backend, and is refused
(a bad request, never silently unconstrained) when it does not; the card says which."""

from __future__ import annotations

import pytest

from dynamo.llm.model_card import STRUCTURED_OUTPUT_KEY
from dynamo.llm.protocol import GuidedDecodingOptions, PreprocessedRequest, SamplingOptions, StopConditions
from dynamo.trtllm.adapter import TrtllmAdapter
from dynamo.trtllm.args import parse_args
from dynamo.worker.adapter import EngineContext
from dynamo.worker.role import WorkerRole
from tests.worker import standins

REGEX = GuidedDecodingOptions(regex="[0-9]{3}")


def request(guided=REGEX) -> PreprocessedRequest:
    return PreprocessedRequest(request_id="g", model="m", token_ids=[5, 6, 7],
                               stop_conditions=StopConditions(max_tokens=2, ignore_eos=True),
                               sampling_options=SamplingOptions(guided_decoding=guided))


async def started(tiny_model, *flags: str) -> tuple[TrtllmAdapter, dict]:
    subject = TrtllmAdapter(parse_args(["--model-path", str(tiny_model), *flags]), api=standins.trtllm_api_standin())
    from prometheus_client import CollectorRegistry

    info = await subject.start(EngineContext(role=WorkerRole.AGG, instance_id=1, registry=CollectorRegistry(),
                                             emit_kv_event=lambda *a, **k: None))
    return subject, info.runtime_data


@pytest.mark.asyncio
async def test_a_grammar_backend_takes_the_constraint(tiny_model):
    subject, card = await started(tiny_model, "--guided-decoding-backend", "xgrammar")
    try:
        assert card[STRUCTURED_OUTPUT_KEY] is True
        outs = [out async for out in subject.generate(request(), "g1")]
        assert outs[-1].finish_reason is not None
        sent = subject.llm.calls[-1]["sampling_params"].kwargs["guided_decoding"]
        assert sent.kwargs == {"regex": "[0-9]{3}"}
        [out async for out in subject.generate(request(None), "g2")]
        assert "guided_decoding" not in subject.llm.calls[-1]["sampling_params"].kwargs
    finally:
        await subject.stop()


@pytest.mark.asyncio
async def test_without_a_grammar_backend_the_constraint_is_refused(tiny_model):
    subject, card = await started(tiny_model)
    try:
        assert card[STRUCTURED_OUTPUT_KEY] is False
        with pytest.raises(ValueError, match="--guided-decoding-backend"):
            subject.generate(request(), "g3")
    finally:
        await subject.stop()

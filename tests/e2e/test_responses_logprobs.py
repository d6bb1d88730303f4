"""Token logprobs and reasoning tokens on the Responses API, end to end with the official `openai` client: a
frontend and a mocker replaying chosen text one token per step (Qwen3 reasoning), whose logprobs are
synthetic but well-formed. Asked for (`include: ["message.output_text.logprobs"]`, `top_logprobs`), the
output text carries its tokens' logprobs, unary and streamed, in the SDK's types; not asked for, none (as
OpenAI); `top_logprobs` over 20 is OpenAI's 400. Usage's `reasoning_tokens` counts the tokens the reasoning
parser made reasoning of, the same on chat completions, unary and streamed."""

from __future__ import annotations

import httpx
import openai
import pytest

from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from tests.fixtures.sdk_types import check_event, sse_events
from tests.fixtures.tools_model import replaying_cluster

pytestmark = pytest.mark.e2e

MODEL = "agent"
CUT_CALL = '<think>Call f.</think>Hi. <tool_call>\n{"name": "f", "arguments": {"a": '  # never becomes JSON
TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
SCRIPTS = {"case:plain": "Just some plain text.",
           "case:think": "<think>The user wants Paris weather.</think>It is sunny.",
           "case:cut": CUT_CALL}
LOGPROBS = ["message.output_text.logprobs"]


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    with replaying_cluster(tmp_path_factory.mktemp("responses-logprobs"), tiny_model, SCRIPTS, MODEL) as c:
        yield c


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def check_logprobs(logprobs, text: str, top: int) -> None:
    """One entry per token of `text`, each with `top` alternatives, most likely first."""
    assert "".join(lp.token for lp in logprobs) == text
    for lp in logprobs:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == top
        assert [t.logprob for t in lp.top_logprobs] == sorted((t.logprob for t in lp.top_logprobs), reverse=True)
        if getattr(lp, "bytes", None) is not None:
            assert lp.bytes == list(lp.token.encode())


@pytest.mark.parametrize("case, text", [("case:plain", "Just some plain text."), ("case:think", "It is sunny.")])
def test_unary_text_carries_its_tokens_logprobs(client, case, text):
    resp = client.responses.create(model=MODEL, input=case, include=LOGPROBS, top_logprobs=3)
    part = resp.output[-1].content[0]
    assert part.text == text and resp.top_logprobs == 3
    check_logprobs(part.logprobs, text, 3)  # the reasoning's tokens are not the text's


def streamed(cluster, **body) -> list:
    """A stream's events as the SDK types them, each validated (the raw JSON: the SDK only constructs)."""
    with httpx.stream("POST", f"{cluster.base_url}/v1/responses", json={"model": MODEL, "stream": True, **body},
                      timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [check_event(e) for e in sse_events(r.read())]


def test_streamed_deltas_carry_their_tokens_logprobs_and_end_as_the_unary_answer(cluster, client):
    unary = client.responses.create(model=MODEL, input="case:think", include=LOGPROBS, top_logprobs=2)
    events = streamed(cluster, input="case:think", include=LOGPROBS, top_logprobs=2)
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas and all("".join(lp.token for lp in e.logprobs) == e.delta for e in deltas)
    done = next(e for e in events if e.type == "response.output_text.done")
    check_logprobs(done.logprobs, "It is sunny.", 2)
    final = events[-1].response.output[-1].content[0].logprobs
    assert [(lp.token, lp.logprob) for lp in final] == [(lp.token, lp.logprob)
                                                        for lp in unary.output[-1].content[0].logprobs]
    with client.responses.stream(model=MODEL, input="case:think", include=LOGPROBS, top_logprobs=2) as stream:
        assert stream.get_final_response().output[-1].content[0].logprobs == unary.output[-1].content[0].logprobs


def test_no_logprobs_unless_included(client):
    resp = client.responses.create(model=MODEL, input="case:plain", top_logprobs=3)
    assert resp.output[0].content[0].logprobs == []
    with client.responses.stream(model=MODEL, input="case:plain") as stream:
        assert all(e.logprobs == [] for e in stream if e.type == "response.output_text.delta")


def test_top_logprobs_over_20_is_openais_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="case:plain", include=LOGPROBS, top_logprobs=21)
    assert (info.value.body["param"], info.value.body["code"]) == ("top_logprobs", "integer_above_max_value")


def test_reasoning_tokens_are_counted_alike_everywhere(client, tiny_model):
    resp = client.responses.create(model=MODEL, input="case:think")
    reasoning = resp.usage.output_tokens_details.reasoning_tokens
    # The replayed tokens up to `</think>` (the opening tag's included), of all the answer's.
    tokenizer = ModelPipeline(build_card(tiny_model, name="tiny", block_size=16)).tokenizer
    assert reasoning == len(tokenizer.encode("<think>The user wants Paris weather.")) < resp.usage.output_tokens
    with client.responses.stream(model=MODEL, input="case:think") as stream:
        completed = [e for e in stream if e.type == "response.completed"][0]
    assert completed.response.usage.output_tokens_details.reasoning_tokens == reasoning
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "case:think"}])
    assert chat.usage.completion_tokens_details.reasoning_tokens == reasoning
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "case:think"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == reasoning
    plain = client.responses.create(model=MODEL, input="case:plain")
    assert plain.usage.output_tokens_details.reasoning_tokens == 0


def test_a_call_that_never_became_json_is_answered_with_its_tokens_logprobs(cluster, client):
    """Answered as the text the model wrote (call markup included), whose tokens' logprobs it carries."""
    text = CUT_CALL.split("</think>")[1]
    resp = client.responses.create(model=MODEL, input="case:cut", tools=TOOLS, include=LOGPROBS)
    part = resp.output[-1].content[0]
    assert part.text == text and "".join(lp.token for lp in part.logprobs) == text
    events = streamed(cluster, input="case:cut", tools=TOOLS, include=LOGPROBS)
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text and "".join(lp.token for lp in done.logprobs) == text


def test_include_values_outside_openais_are_its_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="case:plain", include=["output_text.logprobs"])
    assert (info.value.body["param"], info.value.body["code"]) == ("include", "invalid_value")
    resp = client.responses.create(model=MODEL, input="case:plain", include=["reasoning.encrypted_content"])
    assert resp.output[0].content[0].logprobs == []

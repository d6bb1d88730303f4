"""The Responses API's `truncation: "auto"` through a running frontend and mocker, with the official
`openai` client: a conversation grown past the model's context keeps being answered, its oldest turns
left out (never the instructions, never a tool result without its call), where `disabled` (the default)
is a 400; `/v1/responses/input_tokens` counts the prompt as it will run."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.procs import mocker_cluster

pytestmark = pytest.mark.e2e

CONTEXT = 400


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    with mocker_cluster(tmp_path_factory.mktemp("truncation"), tiny_model, "--context-length", str(CONTEXT)) as c:
        yield c


def _turns(n: int) -> list[dict]:
    """`n` user/assistant exchanges of about 60 tokens each, then a question: far over CONTEXT for n ≥ 8."""
    items: list[dict] = []
    for i in range(n):
        items.append({"role": "user", "content": f"turn {i}: " + "tell me more about the river " * 6})
        items.append({"role": "assistant", "content": f"answer {i}: " + "the river runs to the sea " * 6})
    items.append({"role": "user", "content": "and the last question?"})
    return items


def test_a_conversation_over_the_context_is_a_400_without_truncation(cluster):
    client = cluster.openai_client()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="tiny", input=_turns(12), max_output_tokens=8)
    assert err.value.body["code"] == "context_length_exceeded"


def test_truncation_auto_drops_the_oldest_turns_until_it_fits(cluster):
    client = cluster.openai_client()
    response = client.responses.create(model="tiny", input=_turns(12), max_output_tokens=8,
                                       instructions="You are a guide.", truncation="auto")
    assert response.status in ("completed", "incomplete") and response.truncation == "auto"
    assert 0 < response.usage.input_tokens <= CONTEXT - 8
    counted = client.post("/responses/input_tokens", cast_to=object,
                          body={"model": "tiny", "input": _turns(12), "instructions": "You are a guide.",
                                "max_output_tokens": 8, "truncation": "auto"})
    assert counted["input_tokens"] == response.usage.input_tokens
    # the earliest cut that fits: the longest suffix starting at a user turn whose prompt leaves room for 8 tokens
    items = _turns(12)
    for start in range(0, len(items), 2):
        try:
            tokens = client.post("/responses/input_tokens", cast_to=object,
                                 body={"model": "tiny", "input": items[start:],
                                       "instructions": "You are a guide."})["input_tokens"]
        except openai.BadRequestError:  # the prompt alone is over the context
            continue
        if tokens + 8 <= CONTEXT:
            break
    assert start > 0 and response.usage.input_tokens == tokens


def test_truncation_keeps_the_system_message_and_whole_tool_exchanges(cluster):
    client = cluster.openai_client()
    items: list[dict] = [{"role": "developer", "content": "Always answer in French."}]
    for i in range(8):
        items += [{"role": "user", "content": f"look up item {i} " + "with all its details " * 8},
                  {"type": "function_call", "call_id": f"c{i}", "name": "lookup", "arguments": f'{{"i": {i}}}'},
                  {"type": "function_call_output", "call_id": f"c{i}", "output": "found " * 30}]
    items.append({"role": "user", "content": "summarize"})
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    counted = client.post("/responses/input_tokens", cast_to=object,
                          body={"model": "tiny", "input": items, "tools": tools, "truncation": "auto",
                                "max_output_tokens": 4})
    assert counted["input_tokens"] <= CONTEXT - 4
    # what ran: the developer message, then the whole exchanges from the earliest user turn that fits
    for start in range(1, len(items), 3):
        body = {"model": "tiny", "input": items[:1] + items[start:], "tools": tools}
        try:
            tokens = client.post("/responses/input_tokens", cast_to=object, body=body)["input_tokens"]
        except openai.BadRequestError:
            continue
        if tokens + 4 <= CONTEXT:
            break
    assert start > 1 and counted["input_tokens"] == tokens
    response = client.responses.create(model="tiny", input=items, tools=tools, max_output_tokens=4,
                                       truncation="auto")
    assert response.usage.input_tokens == counted["input_tokens"]


def test_a_prompt_whose_last_turn_alone_is_over_the_context_is_still_a_400(cluster):
    client = cluster.openai_client()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="tiny", input="word " * 2000, truncation="auto")
    assert err.value.body["code"] == "context_length_exceeded"


def test_an_unknown_truncation_value_is_a_400_naming_it(cluster):
    client = cluster.openai_client()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="tiny", input="hi", truncation="sometimes")
    assert err.value.body["param"] == "truncation"

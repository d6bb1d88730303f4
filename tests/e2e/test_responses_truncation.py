"""The Responses API's `truncation: "auto"` through a running frontend and mocker, with the official
`openai` client: a conversation grown past the model's context keeps being answered, its oldest turns
left out (never the instructions, never a tool result without its call), where `disabled` (the default)
is a 400; `/v1/responses/input_tokens` counts the prompt as it will run."""

from __future__ import annotations

import openai
import pytest

from dynamo.frontend.responses_truncation import SLACK
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


def _count(client, body: dict) -> int | None:
    """The prompt's tokens as `/v1/responses/input_tokens` counts them; None for a prompt alone over the context."""
    try:
        return client.post("/responses/input_tokens", cast_to=object, body={"model": "tiny", **body})["input_tokens"]
    except openai.BadRequestError:
        return None


def _expected(client, bodies: list[dict], room: int) -> int:
    """The prompt a cut leaves: the first of `bodies` (the possible cuts, in order) that fits with the slack to
    spare beyond the answer's `room`, else the first that fits at all."""
    counts = [_count(client, body) for body in bodies]
    for spare in (int(CONTEXT * SLACK), 0):
        fitting = [n for n in counts if n is not None and n + room + spare <= CONTEXT]
        if fitting:
            return fitting[0]
    raise AssertionError("no cut fits")


def test_truncation_auto_drops_the_oldest_turns_until_it_fits(cluster):
    client = cluster.openai_client()
    guide = {"instructions": "You are a guide."}
    response = client.responses.create(model="tiny", input=_turns(12), max_output_tokens=8, truncation="auto",
                                       **guide)
    assert response.status in ("completed", "incomplete") and response.truncation == "auto"
    counted = _count(client, {"input": _turns(12), "max_output_tokens": 8, "truncation": "auto", **guide})
    assert counted == response.usage.input_tokens <= CONTEXT - 8 - int(CONTEXT * SLACK)
    items = _turns(12)  # the earliest cut before a user turn that leaves the slack
    assert counted == _expected(client, [{"input": items[start:], **guide} for start in range(2, len(items), 2)], 8)


def test_truncation_keeps_the_developer_message_and_whole_tool_exchanges(cluster):
    client = cluster.openai_client()
    items: list[dict] = [{"role": "developer", "content": "Always answer in French."}]
    for i in range(8):
        items += [{"role": "user", "content": f"look up item {i} " + "with all its details " * 8},
                  {"type": "function_call", "call_id": f"c{i}", "name": "lookup", "arguments": f'{{"i": {i}}}'},
                  {"type": "function_call_output", "call_id": f"c{i}", "output": "found " * 30}]
    items.append({"role": "user", "content": "summarize"})
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    counted = _count(client, {"input": items, "tools": tools, "truncation": "auto", "max_output_tokens": 4})
    cut = [{"input": items[:1] + items[start:], "tools": tools} for start in range(4, len(items), 3)]
    assert counted == _expected(client, cut, 4)
    response = client.responses.create(model="tiny", input=items, tools=tools, max_output_tokens=4,
                                       truncation="auto")
    assert response.usage.input_tokens == counted


def test_an_agent_loop_over_the_context_loses_its_oldest_steps_and_keeps_its_task(cluster):
    """One user turn, then tool calls and results only (as an agent runs): cut between steps, the task kept."""
    client = cluster.openai_client()
    task = {"role": "user", "content": "fix the failing test in the repository"}
    steps: list[dict] = []
    for i in range(12):
        steps += [{"type": "function_call", "call_id": f"c{i}", "name": "run", "arguments": f'{{"step": {i}}}'},
                  {"type": "function_call_output", "call_id": f"c{i}", "output": "output line " * 12}]
    tools = [{"type": "function", "name": "run", "parameters": {"type": "object", "properties": {}}}]
    response = client.responses.create(model="tiny", input=[task] + steps, tools=tools, max_output_tokens=4,
                                       truncation="auto")
    cut = [{"input": [task] + steps[start:], "tools": tools} for start in range(2, len(steps), 2)]
    assert response.usage.input_tokens == _expected(client, cut, 4)


def test_a_truncated_conversation_goes_on_from_what_ran_and_reuses_its_cache(cluster):
    """The stored conversation is the one that ran, and the cut left room: the next turn runs it as it is (its
    prompt starts with the last one's, found in the engine's prefix cache), not cut again; even one that
    does not ask for truncation fits."""
    client = cluster.openai_client()
    first = client.responses.create(model="tiny", input=_turns(12), max_output_tokens=8, truncation="auto")
    second = client.responses.create(model="tiny", input="one more question", max_output_tokens=8,
                                     truncation="auto", previous_response_id=first.id)
    assert first.usage.input_tokens < second.usage.input_tokens <= CONTEXT - 8
    assert second.usage.input_tokens_details.cached_tokens > 0
    third = client.responses.create(model="tiny", input="and another", max_output_tokens=8,
                                    previous_response_id=second.id)  # truncation disabled: the 12 turns would not fit
    assert second.usage.input_tokens < third.usage.input_tokens <= CONTEXT - 8


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

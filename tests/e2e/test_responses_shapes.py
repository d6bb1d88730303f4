"""The Responses API as the official `openai` SDK's own types read it, end to end: a frontend and a mocker
replaying chosen text (Hermes tool calls, Qwen3 reasoning). Every event of a stream, and the Response,
validate as the SDK's pydantic classes (text events' `logprobs`, a call's `name` on its `done`, usage's
`cache_write_tokens`); items stream one at a time, each closed before the next opens; `text.format` is
echoed as asked; stored input items are listed typed, as OpenAI lists them, and an `item_reference` to a
stored item is that item (still once a later response that re-sent it is deleted)."""

from __future__ import annotations

import httpx
import openai
import openai.types.responses as sdk
import pytest

from tests.fixtures.sdk_types import check_event, check_output_item, items_one_at_a_time, sse_events
from tests.fixtures.tools_model import replaying_workers

pytestmark = pytest.mark.e2e

MODEL = "agent"
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
SCRIPTS = {
    "case:plain": "Just text, no tools.",
    "case:text-then-call": "Let me check." + CALL,
    "case:think-then-call": "<think>The user wants Paris weather.</think>" + CALL,
    "case:json": '{"city": "Paris"}',
    "case:first": "FIRST-ANSWER-MARKER",
    "FIRST-ANSWER-MARKER": "The referenced answer was read.",  # longer than case:first: wins when both are there
}
TOOLS = [{"type": "function", "name": "get_weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CASES = {"case:plain": ["message"], "case:text-then-call": ["message", "function_call"],
         "case:think-then-call": ["reasoning", "function_call"]}
JSON_FORMAT = {"type": "json_schema", "name": "City", "strict": True,
               "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    flags = ["--speedup-ratio", "0", "--dyn-tool-call-parser", "hermes", "--dyn-reasoning-parser", "qwen3"]
    with replaying_workers(tmp_path_factory.mktemp("shapes"), tiny_model, SCRIPTS, {MODEL: flags}) as c:
        yield c


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def streamed(cluster, **body) -> list[dict]:
    with httpx.stream("POST", f"{cluster.base_url}/v1/responses", json={"model": MODEL, "stream": True, **body},
                      timeout=60) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r.read())


def unary(cluster, **body) -> dict:
    r = httpx.post(f"{cluster.base_url}/v1/responses", json={"model": MODEL, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("case", list(CASES))
def test_every_event_and_the_response_are_the_sdks_types(cluster, case):
    events = streamed(cluster, input=case, tools=TOOLS)
    typed = [check_event(e) for e in events]  # created, in_progress and completed hold the Response
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert items_one_at_a_time(events) == list(range(len(CASES[case])))
    final = typed[-1].response
    assert events[-1]["type"] == "response.completed" and [o.type for o in final.output] == CASES[case]
    assert final.usage.input_tokens_details.cache_write_tokens == 0
    for event in events:
        if event["type"].startswith("response.output_text."):
            assert event["logprobs"] == []
        if event["type"] == "response.function_call_arguments.done":
            assert event["name"] == "get_weather" and event["arguments"] == '{"city": "Paris"}'
    body = unary(cluster, input=case, tools=TOOLS)
    response = sdk.Response.model_validate(body)
    assert [o.type for o in response.output] == CASES[case]
    for item in body["output"]:
        check_output_item(item)
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": response.usage.input_tokens_details.cached_tokens,
                                                     "cache_write_tokens": 0}


def test_the_text_format_asked_for_is_echoed(cluster, client):
    resp = client.responses.create(model=MODEL, input="case:json", text={"format": JSON_FORMAT})
    assert resp.text.format.type == "json_schema" and resp.text.format.name == "City"
    assert resp.text.format.schema_ == JSON_FORMAT["schema"] and resp.output_text == '{"city": "Paris"}'
    events = streamed(cluster, input="case:json", text={"format": JSON_FORMAT})
    assert events[0]["response"]["text"]["format"] == JSON_FORMAT == events[-1]["response"]["text"]["format"]
    assert client.responses.create(model=MODEL, input="case:plain").text.format.type == "text"


def test_stored_input_items_are_listed_typed(cluster, client):
    """The short forms the Agents SDK sends come back as OpenAI lists them: typed, with ids and statuses."""
    resp = client.responses.create(model=MODEL, tools=TOOLS, input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "case:plain"}])
    listed = httpx.get(f"{cluster.base_url}/v1/responses/{resp.id}/input_items?order=asc", timeout=60).json()
    kinds = [sdk.ResponseInputMessageItem, sdk.ResponseFunctionToolCallItem, sdk.ResponseFunctionToolCallOutputItem,
             sdk.ResponseOutputMessage, sdk.ResponseInputMessageItem]
    for item, kind in zip(listed["data"], kinds, strict=True):
        kind.model_validate(item)
    items = client.responses.input_items.list(resp.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message", "message"]
    assert items[0].content[0].type == "input_text" and items[0].content[0].text == "weather?"
    assert items[3].content[0].type == "output_text" and items[-1].status == "completed"


def test_an_item_reference_is_the_stored_item_it_names(client):
    first = client.responses.create(model=MODEL, input=[{"role": "user", "content": "case:first"}])
    asked = client.responses.input_items.list(first.id).data[0]
    follow = client.responses.create(model=MODEL, input=[
        {"type": "item_reference", "id": asked.id}, {"type": "item_reference", "id": first.output[0].id},
        {"role": "user", "content": "and then?"}])
    assert follow.output_text == "The referenced answer was read."  # the referenced answer reached the model
    items = client.responses.input_items.list(follow.id, order="asc").data
    assert [(i.type, i.role, i.content[0].text) for i in items[:2]] == [("message", "user", "case:first"),
                                                                          ("message", "assistant",
                                                                           "FIRST-ANSWER-MARKER")]
    # `follow` holds those items too (its input): deleting it leaves them to `first`, which still stores them.
    client.responses.delete(follow.id)
    again = client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": first.output[0].id},
                                                         {"role": "user", "content": "and then?"}])
    assert again.output_text == "The referenced answer was read."
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": "hi"},
                                                    {"type": "item_reference", "id": "msg_unknown"}])
    assert info.value.body["param"] == "input[1].id"

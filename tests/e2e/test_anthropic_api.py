"""Anthropic's Messages API (`--enable-anthropic-api`), end to end with the official `anthropic`
client, as Claude Code talks to a frontend: a mocker replaying chosen text (`--replay-file`) behind
a frontend that also strips Claude Code's billing line (`--strip-anthropic-preamble`). The worker
parses Hermes tool calls and Qwen3 reasoning, so thinking, text and tool_use blocks all occur; structured
output (`client.messages.parse`) is held to, or refused, as chat's json_schema is."""

from __future__ import annotations


import re

import anthropic
import httpx
import pydantic
import pytest

from tests.fixtures.tools_model import replaying_cluster

pytestmark = pytest.mark.e2e

MODEL = "claude-local"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
SCRIPTS = {
    "case:plain": "Just text, no tools.",
    "case:think-then-call": ("<think>\nThe user wants Paris weather.\n</think>\n\n<tool_call>\n"
                             '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    # The second turn: present only if the tool result reached the prompt.
    "<tool_response>sunny, 21C</tool_response>": "It is sunny in Paris, 21C.",
    "case:json": '{"city": "Paris"}',  # what an engine held to the schema writes
}
SYSTEM = "You are a careful assistant who answers about the weather. " * 20  # several KV blocks
HEADER = "x-anthropic-billing-header: cc_version=2.1.80; cc_entrypoint=cli; cch={};"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    flags = ("--enable-anthropic-api", "--strip-anthropic-preamble")
    with replaying_cluster(tmp_path_factory.mktemp("anthropic"), tiny_model, SCRIPTS, MODEL, *flags) as c:
        yield c


@pytest.fixture()
def client(cluster):
    return anthropic.Anthropic(base_url=cluster.base_url, api_key="unused", max_retries=0, timeout=60)


def ask(client, text: str, **kw):
    kw.setdefault("max_tokens", 200)
    return client.messages.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def test_a_text_answer_is_a_message_with_one_text_block(client):
    msg = ask(client, "case:plain")
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL and msg.id.startswith("msg_")
    assert [(b.type, b.text) for b in msg.content] == [("text", "Just text, no tools.")]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_a_streamed_answer_is_the_same_message_event_by_event(client):
    with client.messages.stream(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "case:plain"}]) \
            as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "Just text, no tools."
    assert [(b.type, b.text) for b in final.content] == [("text", "Just text, no tools.")]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_and_a_tool_call_are_thinking_and_tool_use_blocks(client, stream):
    kw = dict(model=MODEL, max_tokens=300, tools=[WEATHER_TOOL],
              messages=[{"role": "user", "content": "case:think-then-call"}])
    if stream:
        with client.messages.stream(**kw) as s:
            kinds = [e.type for e in s]
            msg = s.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    else:
        msg = client.messages.create(**kw)
    assert [b.type for b in msg.content] == ["thinking", "tool_use"]
    assert msg.content[0].thinking.strip() == "The user wants Paris weather."
    call = msg.content[1]
    assert call.name == "get_weather" and call.input == {"city": "Paris"} and call.id
    assert msg.stop_reason == "tool_use"


def test_a_tool_result_reaches_the_next_turn(client):
    msg = client.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "sunny, 21C"}]}]}])
    assert msg.content[0].text == "It is sunny in Paris, 21C."


def test_max_tokens_and_stop_sequences_end_the_answer_as_anthropic_says(client):
    short = ask(client, "case:plain", max_tokens=3)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    stopped = ask(client, "case:plain", stop_sequences=["no tools"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "no tools"
    assert stopped.content[0].text == "Just text, "


def test_count_tokens_is_the_prompt_the_model_gets(client):
    kw = dict(model=MODEL, system="Be brief.", tools=[WEATHER_TOOL],
              messages=[{"role": "user", "content": "case:plain"}])
    counted = client.messages.count_tokens(**kw).input_tokens
    usage = client.messages.create(max_tokens=50, **kw).usage
    assert counted == usage.input_tokens + usage.cache_read_input_tokens > 0
    without_tools = client.messages.count_tokens(model=MODEL, system="Be brief.",
                                                 messages=[{"role": "user", "content": "case:plain"}]).input_tokens
    assert without_tools < counted  # the tool definitions are part of the prompt


def test_claude_codes_billing_line_is_stripped_so_the_system_prompt_is_reused(client):
    def turn(cch: str, question: str):
        system = [{"type": "text", "text": HEADER.format(cch)}, {"type": "text", "text": SYSTEM}]
        return client.messages.create(model=MODEL, max_tokens=5, system=system,
                                      messages=[{"role": "user", "content": question}])

    turn("a1b2c", "first question")
    second = turn("f9e8d", "second question")  # another hash, as every Claude Code request has
    assert second.usage.cache_read_input_tokens > 0
    plain = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=[{"role": "user", "content": "q"}])
    headed = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "q"}], system=[
        {"type": "text", "text": HEADER.format("zz")}, {"type": "text", "text": SYSTEM}])
    assert headed.input_tokens == plain.input_tokens


def test_errors_take_anthropics_shape(cluster, client):
    url = cluster.base_url + "/v1/messages"
    no_max = httpx.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert no_max.status_code == 400
    body = no_max.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "max_tokens" and "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        ask(client, "hi", tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "client tools" in server_tool.value.body["error"]["message"]
    bad_block = httpx.post(url, timeout=30, json={"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}]})
    assert bad_block.status_code == 400 and bad_block.json()["error"]["param"] == "messages[0].content[0].type"
    assert httpx.post(url, content=b"{not json", timeout=30).json()["error"]["type"] == "invalid_request_error"
    for block in ({"type": "image", "source": "x"}, {"type": "document", "source": [1]}):
        odd = httpx.post(url, timeout=30, json={"model": MODEL, "max_tokens": 5, "messages": [
            {"role": "user", "content": [block]}]})  # was a 500 (`.get` on a string)
        assert odd.status_code == 400 and odd.json()["error"]["param"] == "messages[0].content[0].source", odd.text


def test_a_prompt_over_the_context_gets_anthropics_message_and_claude_codes_retry_fits(client):
    """Claude Code asks for a large `max_tokens`; told `input + max_tokens > limit` in Anthropic's
    words, it retries with what fits, and on "prompt is too long" it compacts the conversation."""
    with pytest.raises(anthropic.BadRequestError) as over:
        ask(client, "case:plain", max_tokens=32000)
    message = over.value.body["error"]["message"]
    parsed = re.fullmatch(r"input length and `max_tokens` exceed context limit: (\d+) \+ (\d+) > (\d+), "
                          r"decrease input length or `max_tokens` and try again", message)
    assert parsed, message
    prompt, asked, limit = map(int, parsed.groups())
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "case:plain"}])
    assert (prompt, asked) == (counted.input_tokens, 32000) and prompt < limit < 32000
    retried = ask(client, "case:plain", max_tokens=limit - prompt)  # what the client's retry sends
    assert retried.content[0].text == "Just text, no tools."
    with pytest.raises(anthropic.BadRequestError) as too_long:
        ask(client, "lorem ipsum dolor " * 2000)
    parsed = re.fullmatch(r"prompt is too long: (\d+) tokens > (\d+) maximum", too_long.value.body["error"]["message"])
    assert parsed and int(parsed[1]) > int(parsed[2]) == limit, too_long.value.body


class City(pydantic.BaseModel):
    city: str


@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_is_the_json_text_the_sdk_parses(cluster, client, stream):
    """`client.messages.parse(output_format=...)` sends `output_config.format`: chat's json_schema, so the
    answer is the JSON text; a format that cannot be held to is a 400 naming it, not silently ignored."""
    kw = dict(model=MODEL, max_tokens=200, output_format=City, messages=[{"role": "user", "content": "case:json"}])
    if stream:
        with client.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.parse(**kw)
    assert msg.parsed_output == City(city="Paris") and msg.stop_reason == "end_turn"
    url = cluster.base_url + "/v1/messages"
    for extra, param in (({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
                         ({"output_format": {"type": "json_schema"}}, "output_format.schema")):
        bad = httpx.post(url, timeout=30, json={"model": MODEL, "max_tokens": 5, **extra,
                                                "messages": [{"role": "user", "content": "case:json"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text

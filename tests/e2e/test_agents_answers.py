"""How an agent's answer ends, end to end with the official `anthropic` and `openai` clients: frontend +
mocker workers replaying chosen text (`--replay-file`, one token per step). A call the client cannot run
(cut off by the token limit, arguments not JSON or not an object) is answered as the text the model wrote,
streamed as unary, on Anthropic's Messages and OpenAI's Responses; text after a call keeps its whitespace;
Anthropic's prefill is continued; Responses takes a function call's output as content parts; a Responses
stream that fails mid-way says so in its own events; a body over the limit on /v1/messages is refused in
Anthropic's shape; Anthropic-defined client tools (text editor, bash) are called under their names, and a
search result inside a tool result reaches the model as text."""

from __future__ import annotations

import json
import socket

import anthropic
import openai
import pytest

from tests.fixtures.tools_model import replaying_workers

pytestmark = pytest.mark.e2e

MODEL = "agent"  # hermes tool calls, qwen3 reasoning
VICTIM = "victim"  # a slow worker, killed mid-stream by the last test
CODE = 'import os\\n\\ndef main():\\n    print(os.getcwd())\\n    return 0\\n'
WRITE = ('<tool_call>{"name": "Write", "arguments": {"file_path": "/tmp/app.py", "content": "' + CODE * 4
         + '"}}</tool_call>')
AFTER = "\n\nFirst line.\n\n    indented()\nDone"
SCRIPTS = {
    "case:write": WRITE,
    "case:cut-call": '<tool_call>\n{"name": "get_weather", "arguments": {"city": ',
    "case:bad-literal": '<tool_call>{"name": "get_weather", "arguments": {"city": tru}}</tool_call>',
    "case:null-args": '<tool_call>{"name": "get_time", "arguments": null}</tool_call>',
    "case:list-args": '<tool_call>{"name": "get_time", "arguments": [1, 2]}</tool_call>',
    "case:text-after": '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>' + AFTER,
    # A prefill that is continued ends the prompt; one closed as a turn is followed by its end-of-turn.
    "ZZPREFILL<|im_end|>": "CLOSED-AS-A-TURN",
    "ZZPREFILL": " and so it goes on.",
    "<tool_response>sunny, 21C</tool_response>": "It is sunny in Paris, 21C.",
    "case:plain": "Just text, no tools.",
    "case:edit": '<tool_call>{"name": "str_replace_based_edit_tool", "arguments": '
                 '{"command": "str_replace", "path": "/repo/app.py", "old_str": "a", "new_str": "b"}}</tool_call>',
    "The Loire is long.": "The Loire, then.",
}
TOOLS = [{"name": "Write", "input_schema": {"type": "object", "properties": {
             "file_path": {"type": "string"}, "content": {"type": "string"}}}},
         {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
RESPONSE_TOOLS = [{"type": "function", "name": t["name"], "parameters": t["input_schema"]} for t in TOOLS]
CHAT_TOOLS = [{"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}} for t in TOOLS]


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    flags = ["--speedup-ratio", "0", "--dyn-tool-call-parser", "hermes", "--dyn-reasoning-parser", "qwen3"]
    with replaying_workers(tmp_path_factory.mktemp("answers"), tiny_model, SCRIPTS, {MODEL: flags},
                           "--enable-anthropic-api") as c:
        c.victim = c.mocker("--speedup-ratio", "0.5", model_name=VICTIM, system_port=False)  # type: ignore[attr-defined]
        c.wait_workers(VICTIM, 1, timeout=120)
        yield c


@pytest.fixture()
def claude(cluster):
    return anthropic.Anthropic(base_url=cluster.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def message(claude, text: str, stream: bool, max_tokens: int = 400, messages: list | None = None):
    """The Message, unary or as the official client's stream helper assembles it (which parses each
    tool_use block's input JSON, and raises where it cannot)."""
    kw = dict(model=MODEL, max_tokens=max_tokens, tools=TOOLS,
              messages=messages or [{"role": "user", "content": text}])
    if not stream:
        return claude.messages.create(**kw)
    with claude.messages.stream(**kw) as s:
        return s.get_final_message()


def blocks(msg) -> list[tuple]:
    return [(b.type, b.text) if b.type == "text" else (b.type, b.name, b.input) for b in msg.content]


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_cut_by_max_tokens_is_the_text_and_max_tokens(claude, stream):
    msg = message(claude, "case:write", stream, max_tokens=40)
    assert msg.stop_reason == "max_tokens"
    [(kind, text)] = blocks(msg)
    assert kind == "text" and text.startswith("<tool_call>") and WRITE.startswith(text)
    assert blocks(msg) == blocks(message(claude, "case:write", not stream, max_tokens=40))


@pytest.mark.parametrize("case", ["cut-call", "bad-literal", "null-args", "list-args"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_call_the_client_cannot_run_is_the_text(claude, case, stream):
    """Arguments cut off, not JSON, or JSON but no object: not a tool_use (the stream helper would raise on
    the JSON, and `input` is always an object), but what the model wrote, and not `tool_use`."""
    msg = message(claude, f"case:{case}", stream)
    assert blocks(msg) == [("text", SCRIPTS[f"case:{case}"])]
    assert msg.stop_reason == "end_turn"


@pytest.mark.parametrize("stream", [False, True])
def test_a_whole_call_is_still_a_tool_use_block(claude, stream):
    msg = message(claude, "case:write", stream)
    assert msg.stop_reason == "tool_use"
    [(kind, name, input_)] = blocks(msg)
    assert (kind, name, input_["file_path"]) == ("tool_use", "Write", "/tmp/app.py")
    assert input_["content"] == json.loads(f'"{CODE}"') * 4


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_defined_client_tools_are_called_as_their_applications_expect(claude, stream):
    """Declared by type and name alone (no input_schema), as applications built for Claude declare them: the
    model sees them with the schemas the applications execute, and its call comes back under the tool's name."""
    tools = [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
             {"type": "bash_20250124", "name": "bash"}]
    kw = dict(model=MODEL, max_tokens=400, tools=tools, messages=[{"role": "user", "content": "case:edit"}])
    if stream:
        with claude.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = claude.messages.create(**kw)
    assert blocks(msg) == [("tool_use", "str_replace_based_edit_tool",
                            {"command": "str_replace", "path": "/repo/app.py", "old_str": "a", "new_str": "b"})]
    assert msg.stop_reason == "tool_use"
    with_schemas = claude.messages.count_tokens(model=MODEL, tools=tools, messages=kw["messages"]).input_tokens
    bare = claude.messages.count_tokens(model=MODEL, messages=kw["messages"]).input_tokens
    assert with_schemas > bare + 100  # the schemas (commands, paths, strings) are in the prompt


def test_a_search_result_in_a_tool_result_reaches_the_model_as_text(claude):
    result = {"type": "search_result", "source": "https://docs.example/rivers", "title": "Rivers",
              "content": [{"type": "text", "text": "The Loire is long."}]}
    msg = claude.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[
        {"role": "user", "content": "Which river is long?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [result]}]}])
    assert blocks(msg) == [("text", "The Loire, then.")]


def test_text_after_a_call_keeps_its_line_breaks(claude, client):
    """Fed one token at a time (`\\n\\n` and indentation are tokens of their own), chat and Anthropic alike."""
    for stream in (False, True):
        msg = message(claude, "case:text-after", stream)
        assert blocks(msg) == [("text", AFTER), ("tool_use", "get_time", {})]
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "case:text-after"}],
                                          tools=CHAT_TOOLS, max_tokens=400)
    assert resp.choices[0].message.content == AFTER
    chunks = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "case:text-after"}],
                                            tools=CHAT_TOOLS, max_tokens=400, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == AFTER


@pytest.mark.parametrize("stream", [False, True])
def test_an_assistant_prefill_is_continued(claude, stream):
    """Anthropic's prefill: the reply carries on from the assistant's last message and holds only what follows."""
    msg = message(claude, "", stream, messages=[{"role": "user", "content": "Tell me a story."},
                                                {"role": "assistant", "content": "ZZPREFILL"}])
    assert blocks(msg) == [("text", " and so it goes on.")] and msg.stop_reason == "end_turn"


def test_responses_a_call_that_never_became_json_is_the_text(client):
    resp = client.responses.create(model=MODEL, input="case:cut-call", tools=RESPONSE_TOOLS)
    assert [(o.type, o.status) for o in resp.output] == [("message", "completed")]
    assert resp.status == "completed" and resp.output_text == SCRIPTS["case:cut-call"]
    events = list(client.responses.create(model=MODEL, input="case:cut-call", tools=RESPONSE_TOOLS, stream=True))
    assert not [e for e in events if e.type.startswith("response.function_call")]
    final = events[-1].response
    assert events[-1].type == "response.completed" and final.output_text == SCRIPTS["case:cut-call"]
    assert [(o.type, o.status) for o in final.output] == [("message", "completed")]


def test_responses_the_item_max_output_tokens_cut_is_incomplete(client):
    resp = client.responses.create(model=MODEL, input="case:write", tools=RESPONSE_TOOLS, max_output_tokens=40)
    assert resp.status == "incomplete" and [(o.type, o.status) for o in resp.output] == [("message", "incomplete")]
    assert resp.output_text.startswith("<tool_call>") and WRITE.startswith(resp.output_text)
    events = list(client.responses.create(model=MODEL, input="case:write", tools=RESPONSE_TOOLS,
                                          max_output_tokens=40, stream=True))
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [(i.type, i.status) for i in done] == [("message", "incomplete")]
    assert events[-1].type == "response.incomplete" and events[-1].response.output_text == resp.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_a_function_call_output_of_parts_reaches_the_model_as_text(client):
    """The template renders the tool message; the replay answers only if it reads `sunny, 21C`."""
    resp = client.responses.create(model=MODEL, tools=RESPONSE_TOOLS, input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1",
         "output": [{"type": "input_text", "text": "sunny, "}, {"type": "input_text", "text": "21C"}]}])
    assert resp.output_text == "It is sunny in Paris, 21C."
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=[
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}]}])
    assert info.value.body["param"] == "input[0].output[0].type"


def test_responses_a_refusal_replayed_is_assistant_text(client):
    resp = client.responses.create(model=MODEL, input=[
        {"role": "user", "content": "Something bad."},
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"role": "user", "content": "case:plain"}])
    assert resp.output_text == "Just text, no tools."


def test_a_body_over_the_limit_on_messages_is_refused_in_anthropics_shape(cluster):
    with socket.create_connection(("127.0.0.1", cluster.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 900000000\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "request_too_large" and error["error"]["message"]


def test_responses_a_stream_that_fails_mid_way_ends_with_error_and_response_failed(cluster, client):
    """The worker dies mid-answer (no migration): Responses' own `error` and `response.failed` events, typed as
    the client types them, not a bare error frame. Last: it kills this module's slow worker."""
    events = []
    for event in client.responses.create(model=VICTIM, input="tell me a long story", max_output_tokens=400,
                                         stream=True):
        events.append(event)
        if sum(e.type == "response.output_text.delta" for e in events) == 5:
            cluster.victim.kill()
    assert [e.type for e in events[-2:]] == ["error", "response.failed"], [e.type for e in events[-3:]]
    error, failed = events[-2:]
    assert error.message and error.code
    assert failed.response.status == "failed" and failed.response.error.message == error.message
    assert failed.response.error.code == "server_error"
    assert [e.sequence_number for e in events] == list(range(len(events)))

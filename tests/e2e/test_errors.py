"""Bad input and overload get OpenAI-shaped errors with the right status, never a
500, a hang or a crash (checked with raw HTTP so the exact status and body show)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.fixtures.procs import mocker_cluster

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    with mocker_cluster(tmp_path_factory.mktemp("errors"), tiny_model, "--speedup-ratio", "100",
                        extra_env={"DYN_HTTP_BODY_LIMIT_MB": "1"}) as c:
        yield c


@pytest.fixture()
def http(cluster):
    with httpx.Client(base_url=cluster.base_url, timeout=30) as client:
        yield client


def assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def chat(**overrides):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    body.update(overrides)
    return body


def test_malformed_json(http):
    resp = http.post("/v1/chat/completions", content=b'{"model": "tiny", "messages": [', headers={
        "content-type": "application/json"})
    assert assert_error(resp, 400)["code"] == "invalid_json"


def test_missing_messages(http):
    resp = http.post("/v1/chat/completions", json={"model": MODEL})
    assert_error(resp, 400, "messages")


def test_ill_typed_field(http):
    resp = http.post("/v1/chat/completions", json=chat(max_tokens="ten"))
    assert_error(resp, 400, "max_tokens")


@pytest.mark.parametrize("value", [-1, 0])
def test_non_positive_max_tokens(http, value):
    assert_error(http.post("/v1/chat/completions", json=chat(max_tokens=value)), 400, "max_tokens")


def test_temperature_out_of_range(http):
    assert_error(http.post("/v1/chat/completions", json=chat(temperature=3.5)), 400, "temperature")


def test_unknown_model_is_404(http):
    error = assert_error(http.post("/v1/chat/completions", json=chat(model="no-such-model")), 404, "model")
    assert error["code"] == "model_not_found"


def test_prompt_over_context_is_400(http):
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": "word " * 5000, "max_tokens": 1})
    assert assert_error(resp, 400)["code"] == "context_length_exceeded"


def test_max_tokens_over_remaining_context_is_400(http):
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": "hello", "max_tokens": 100000})
    assert assert_error(resp, 400, "max_tokens")["code"] == "context_length_exceeded"


def test_n_out_of_range_or_greedy_is_refused(http):
    assert_error(http.post("/v1/chat/completions", json=chat(n=0)), 400, "n")
    assert_error(http.post("/v1/chat/completions", json=chat(n=1000)), 400, "n")
    # Dynamo's rule: n identical greedy samples are refused.
    assert_error(http.post("/v1/chat/completions", json=chat(n=2, temperature=0)), 400, "temperature")


def test_bad_tools_and_logprobs_are_refused(http):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert_error(http.post("/v1/chat/completions", json=chat(tools=[{"type": "function"}])), 400, "tools[0]")
    assert_error(http.post("/v1/chat/completions", json=chat(tools=[tool], tool_choice={
        "type": "function", "function": {"name": "g"}})), 400, "tool_choice")
    assert_error(http.post("/v1/chat/completions", json=chat(tool_choice="required")), 400, "tool_choice")
    assert_error(http.post("/v1/chat/completions", json=chat(tools=[tool], tool_choice="sometimes")), 400,
                 "tool_choice")
    assert_error(http.post("/v1/chat/completions", json=chat(logprobs=True, top_logprobs=50)), 400, "top_logprobs")
    assert_error(http.post("/v1/chat/completions", json=chat(top_logprobs=2)), 400, "top_logprobs")


def test_what_the_models_here_cannot_honour_is_refused_not_dropped(http):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, image]}]
    error = assert_error(http.post("/v1/chat/completions", json=chat(messages=messages)), 400,
                         "messages[0].content[1].image_url.url")  # this model's workers read no images
    assert error["code"] == "unsupported_content" and "takes text only" in error["message"]
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    error = assert_error(http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": [audio]}])),
                         400, "messages[0].content[0].type")  # no worker here reads audio
    assert error["code"] == "unsupported_content" and "input_audio" in error["message"]
    legacy = assert_error(http.post("/v1/chat/completions", json=chat(functions=[{"name": "f", "parameters": {}}])),
                          400, "functions")
    assert "tools" in legacy["message"]  # it says what to send instead
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert http.post("/v1/chat/completions", json=chat(messages=text_parts)).status_code == 200


def test_a_batch_with_an_empty_prompt_or_too_many_choices_is_refused(http):
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": ["a", ""], "max_tokens": 2})
    assert_error(resp, 400, "prompt")
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 129, "max_tokens": 2})
    assert_error(resp, 400, "prompt")


def test_wrong_prompt_type(http):
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": [{"x": 1}], "max_tokens": 2})
    assert_error(resp, 400, "prompt")


def test_token_ids_out_of_vocab(http):
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": [1, 999999], "max_tokens": 2})
    assert_error(resp, 400, "prompt")


def test_unknown_route_and_method(http):
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_body_over_limit_is_413_without_reading_it(cluster):
    """Declare a 50 MB body but send only the headers: the answer must come at once."""
    with socket.create_connection(("127.0.0.1", cluster.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 52428800\r\n\r\n")
        data = _read_response(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "request_too_large"


def _read_response(sock: socket.socket) -> bytes:
    """Headers and body may arrive in separate segments: read until Content-Length is satisfied."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data


def test_chunked_body_over_limit_is_413(http):
    def gen():
        for _ in range(40):
            yield b"x" * 65536

    resp = http.post("/v1/chat/completions", content=gen(), headers={"content-type": "application/json"})
    assert_error(resp, 413)


def test_server_still_serves_after_bad_input(http):
    resp = http.post("/v1/chat/completions", json=chat())
    assert resp.status_code == 200
    assert resp.json()["usage"]["completion_tokens"] == 4


def test_an_anthropic_client_without_the_flag_is_told_which_flag_serves_it(http):
    resp = http.post("/v1/messages", json={"model": "tiny", "max_tokens": 5, "messages": []})
    body = resp.json()
    assert resp.status_code == 404 and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "--enable-anthropic-api" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings"])
def test_json_nested_too_deeply_is_a_400(http, path):
    """Thousands of nested brackets (a 4 KB body) exceed any JSON parser's recursion: the client's error."""
    body = (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi", '
            b'"nested": ' + b"[" * 2000 + b"]" * 2000 + b"}")
    resp = http.post(path, content=body, headers={"content-type": "application/json"})
    assert assert_error(resp, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("field", ["seed", "top_k", "min_tokens", "max_tokens"])
def test_integers_beyond_64_bits_are_a_400_naming_the_field(http, field):
    resp = http.post("/v1/chat/completions", json=chat(**{field: 10**20}))
    assert assert_error(resp, 400, field)["code"] == "invalid_value"
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2, field: -(10**20)})
    assert_error(resp, 400, field)


def test_integers_beyond_64_bits_elsewhere_are_a_400(http):
    assert_error(http.post("/v1/chat/completions", json=chat(stop=["x", 10**20])), 400, "stop[1]")
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": "hi", "seed": 10**20}), 400)
    for nvext in ({"backend_instance_id": 10**20}, {"agent_hints": {"osl": 10**20}}):
        resp = http.post("/v1/chat/completions", json=chat(nvext=nvext))
        assert 400 <= resp.status_code < 500, resp.text
    assert http.post("/v1/chat/completions", json=chat()).status_code == 200  # and it still serves


def _formatted_prompt(http, **fields) -> str:
    body = chat(stream=True, nvext={"annotations": ["formatted_prompt"]}, max_tokens=2, **fields)
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        lines = list(resp.iter_lines())
    return json.loads(lines[lines.index("event: formatted_prompt") + 1][2:])


def test_an_assistant_prefill_is_continued_not_closed(http):
    """vLLM's continue_final_message: the prompt ends with the final message's text (no end of turn, no new
    assistant turn); without a generation prompt it ends with the last message's own end of turn."""
    prefill = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure, "}]}
    plain = _formatted_prompt(http, **prefill)
    continued = _formatted_prompt(http, **prefill, continue_final_message=True, add_generation_prompt=False)
    assert continued.endswith("Sure,") and plain.startswith(continued) and len(plain) > len(continued) + 10
    closed = _formatted_prompt(http, **prefill, add_generation_prompt=False)
    assert plain.startswith(closed) and continued in closed and closed != plain
    assert _formatted_prompt(http, **prefill, chat_template_kwargs={"add_generation_prompt": False}) == closed


def test_an_impossible_prefill_and_contradictory_limits_are_400s(http):
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}]
    resp = http.post("/v1/chat/completions", json=chat(messages=prefill, continue_final_message=True))
    assert_error(resp, 400, "continue_final_message")  # add_generation_prompt is true by default
    empty = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]
    resp = http.post("/v1/chat/completions", json=chat(messages=empty, continue_final_message=True,
                                                       add_generation_prompt=False))
    assert_error(resp, 400, "continue_final_message")
    assert_error(http.post("/v1/chat/completions", json=chat(min_tokens=10, max_tokens=3)), 400, "min_tokens")
    resp = http.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2,
                                              "stream_options": {"include_usage": True}})
    assert_error(resp, 400, "stream_options")
    for logprobs in (0, 1):
        assert_error(http.post("/v1/chat/completions", json=chat(logprobs=logprobs)), 400, "logprobs")


def test_responses_refusals_name_the_responses_fields(http):
    """A Responses request runs as a chat request; its refusals still name its own fields."""
    over = {"model": MODEL, "input": "hi", "max_output_tokens": 10**6}
    assert_error(http.post("/v1/responses", json=over), 400, "max_output_tokens")
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": "word " * 5000}), 400, "input")
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": "hi", "temperature": "hot"}), 400,
                 "temperature")
    resp = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]})
    assert_error(resp, 400, "tools[0].type")  # a hosted tool nobody here runs: refused, not ignored


def test_a_user_message_without_content_or_a_tool_result_without_its_call_is_a_400(http):
    resp = http.post("/v1/chat/completions", json=chat(messages=[{"role": "user"}]))
    assert_error(resp, 400, "messages[0].content")
    tool_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{
        "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    assert http.post("/v1/chat/completions", json=chat(messages=tool_turn)).status_code == 200
    unanswered = [*tool_turn[:2], {"role": "tool", "content": "ok"}]  # the result of which call?
    resp = http.post("/v1/chat/completions", json=chat(messages=unanswered))
    assert_error(resp, 400, "messages[2].tool_call_id")
    assert resp.json()["error"]["code"] == "missing_required_parameter"


def test_odd_shapes_a_validator_missed_are_400s_not_500s(http):
    """What a static hunt for 500s found (each was a 500): a Responses item's non-string call_id (it also
    broke every later read of the stored response) or text, a non-object tool schema, a batch create body
    over its limit; and a template variable named `self` is just a variable."""
    call = [{"type": "function_call", "call_id": 7, "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": 7, "output": "x"}, {"role": "user", "content": "hi"}]
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": call}), 400, "input[0].call_id")
    text = [{"role": "user", "content": [{"type": "input_text", "text": None}]}]
    assert_error(http.post("/v1/responses", json={"model": MODEL, "input": text}), 400, "input[0].content[0].text")
    tools = [{"type": "function", "function": {"name": "f", "parameters": "oops"}}]
    assert_error(http.post("/v1/chat/completions", json=chat(tools=tools)), 400, "tools[0].function.parameters")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": [1]}}}]
    assert_error(http.post("/v1/chat/completions", json=chat(tools=tools)), 400, "tools[0].function.parameters")
    big = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h",
           "metadata": {"k": "x" * (1 << 20)}}
    assert http.post("/v1/batches", json=big).status_code == 413
    assert http.post("/v1/chat/completions", json=chat(chat_template_kwargs={"self": 1})).status_code == 200

"""What agent frameworks send, end to end: frontend + mocker workers replaying chosen
text (`--replay-file`), the official `openai` client. One worker per parser; each
replayed text is tokenized by the tiny byte-level BPE, one token per step, so every
marker arrives split across tokens."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.fixtures.tools_model import TEMPLATE, replaying_workers

pytestmark = pytest.mark.e2e

WEATHER = {"city": "Paris", "unit": "celsius"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}, "unit": {"type": "string"},
                                                "days": {"type": "integer"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]

# Tool-call output per parser, in each model family's documented format: two calls.
CALLS = {
    "hermes": ('I will check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
               '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),
    "llama3_json": ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
                    '{"name": "get_time", "parameters": {}}'),
    "mistral": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
                '{"name": "get_time", "arguments": {}}]'),
    "pythonic": '[get_weather(city="Paris", unit="celsius"), get_time()]',
    "qwen3_coder": ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\n"
                    "celsius\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n"
                    "</tool_call>"),
    "deepseek_v3": ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                    '{"city": "Paris", "unit": "celsius"}\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function'
                    "<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    "harmony": ("<|channel|>analysis<|message|>User wants the weather.<|end|><|start|>assistant<|channel|>commentary "
                'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "unit": "celsius"}<|call|>'
                "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}<|call|>"),
    "default": ('<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
                '{"name": "get_time", "arguments": {}}]</TOOLCALL>'),
    "kimi_k2": ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
                '{"city": "Paris", "unit": "celsius"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1'
                "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>"),
    "glm47": ("<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key>"
              "<arg_value>celsius</arg_value></tool_call><tool_call>get_time</tool_call>"),
    "minimax_m2": ('<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
                   '<parameter name="unit">celsius</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n'
                   "</minimax:tool_call>"),
    "deepseek_v3_2": ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" '
                      'string="true">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name="unit" string="true">celsius'
                      '</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name="get_time">\n</｜DSML｜invoke>\n'
                      "</｜DSML｜function_calls>"),
}
# Formats whose calls carry the model's own ids (its chat template expects them back).
MODEL_IDS = {"kimi_k2": {"functions.get_weather:0", "functions.get_time:1"}}
# Templates that leave the reasoning open, or closed, at the end of the prompt (as DeepSeek V3.1, GLM-4.7
# and MiniMax M2 do in thinking mode, and Qwen3 does with thinking off).
OPENS_THINK = TEMPLATE.replace("<|im_start|>assistant\n{%- endif %}", "<|im_start|>assistant\n<think>\n{%- endif %}")
CLOSES_THINK = TEMPLATE.replace("<|im_start|>assistant\n{%- endif %}",
                                "<|im_start|>assistant\n<think>\n\n</think>\n\n{%- endif %}")
TEMPLATED = {"minimax-think": OPENS_THINK, "r1-no-think": CLOSES_THINK}
WORKERS = {  # model name -> (tool parser, reasoning parser)
    **{name: (name, None) for name in CALLS},
    "harmony": ("harmony", "gpt_oss"),
    "qwen3": ("hermes", "qwen3"),
    "r1": (None, "deepseek_r1"),
    "minimax-think": ("minimax_m2", "minimax_m2"),
    "r1-no-think": (None, "deepseek_r1"),
    "hermes-grammar": ("hermes", None),  # its card says the engine holds output to grammars, as vLLM's does
}
GRAMMAR_BOUND = {"hermes-grammar"}
SCRIPTS = {
    **{f"case:{name}": text for name, text in CALLS.items()},
    "case:think-then-call": ("<think>\nThe user wants Paris weather.\n</think>\n\n<tool_call>\n"
                             '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    "case:r1": "The user greets me.</think>\n\nHello!",
    "case:opened": ("The user wants the weather.\n</think>\n\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n"
                    '<parameter name="city">Paris</parameter>\n</invoke>\n</minimax:tool_call>'),
    "case:no-think": "Hello there!",
    "case:malformed": "<tool_call>{not json}</tool_call> sorry",
    # What an engine following the grammar writes for tool_choice named / required (bare JSON).
    "case:guided-named": ' {"zone": "Europe/Paris"}',
    "case:guided-required": '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
    "case:cut-call": '<tool_call>\n{"name": "get_weather", "arguments": {"city": ',
    "case:plain": "Just text, no tools.",
    "case:long-args": ('<tool_call>{"name": "get_weather", "arguments": {"city": "' + "Llanfairpwllgwyngyll " * 12
                       + '"}}</tool_call>'),
    # The second turn: present only if the template rendered the tool result.
    "<tool_response>sunny, 21C</tool_response>": "It is sunny in Paris, 21C.",
}
@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agents")
    with replaying_workers(tmp, tiny_model, SCRIPTS, {name: worker_flags(tmp, name) for name in WORKERS},
                           "--enable-anthropic-api") as c:
        yield c


def worker_flags(tmp, name: str) -> list[str]:
    """`name`'s worker: its parsers, its template; one runs at (simulated) real speed, so its tokens arrive
    one by one."""
    tool, reasoning = WORKERS[name]
    args = ["--speedup-ratio", "1" if name == "qwen3" else "0"]
    args += ["--dyn-tool-call-parser", tool] if tool else []
    args += ["--dyn-reasoning-parser", reasoning] if reasoning else []
    args += ["--structured-output"] if name in GRAMMAR_BOUND else []
    if name in TEMPLATED:
        (tmp / f"{name}.jinja").write_text(TEMPLATED[name])
        args += ["--custom-jinja-template", str(tmp / f"{name}.jinja")]
    return args


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def ask(client, model: str, text: str, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=400, **kw)


def accumulate(stream) -> tuple[str, str, dict[int, dict], list[str], int]:
    """(content, reasoning, calls by index, finish reasons, chunks carrying arguments)."""
    content, reasoning, calls, finishes, arg_chunks = [], [], {}, [], 0
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
            for tc in delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    assert call["id"] is None
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    assert call["name"], "arguments arrived before the name"
                    call["arguments"] += tc.function.arguments
                    arg_chunks += 1
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return "".join(content), "".join(reasoning), calls, finishes, arg_chunks


@pytest.mark.parametrize("parser", sorted(CALLS))
def test_streamed_tool_calls_accumulate_into_valid_calls(client, parser):
    stream = ask(client, parser, f"case:{parser}", tools=TOOLS, stream=True)
    content, reasoning, calls, finishes, arg_chunks = accumulate(stream)
    assert finishes == ["tool_calls"]
    assert [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)] == [
        ("get_weather", WEATHER), ("get_time", {})]
    ids = {c["id"] for c in calls.values()}
    assert ids == MODEL_IDS[parser] if parser in MODEL_IDS else all(i.startswith("call_") for i in ids)
    assert len(ids) == 2
    assert content == ("I will check." if parser == "hermes" else "")
    assert "<" not in content and "[" not in content
    if parser == "harmony":
        assert reasoning == "User wants the weather."
    assert arg_chunks >= 2


@pytest.mark.parametrize("parser", sorted(CALLS))
def test_unary_tool_calls(client, parser):
    resp = ask(client, parser, f"case:{parser}", tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", WEATHER), ("get_time", {})]
    assert all(c.type == "function" for c in calls)
    ids = {c.id for c in calls}
    assert ids == MODEL_IDS[parser] if parser in MODEL_IDS else all(i.startswith("call_") for i in ids)


def test_arguments_stream_incrementally(client):
    _, _, calls, finishes, arg_chunks = accumulate(ask(client, "qwen3", "case:long-args", tools=TOOLS, stream=True))
    assert finishes == ["tool_calls"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"])["city"].startswith("Llanfairpwllgwyngyll")
    assert arg_chunks > 3, "arguments should stream as they are generated, not arrive whole"


def test_reasoning_then_tool_call_streamed_and_unary(client):
    content, reasoning, calls, finishes, _ = accumulate(
        ask(client, "qwen3", "case:think-then-call", tools=TOOLS, stream=True))
    assert reasoning == "\nThe user wants Paris weather.\n"
    assert content == "" and finishes == ["tool_calls"]
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    msg = ask(client, "qwen3", "case:think-then-call", tools=TOOLS).choices[0].message
    assert msg.model_extra["reasoning_content"] == "\nThe user wants Paris weather.\n"
    assert msg.content is None and msg.tool_calls[0].function.name == "get_weather"


def test_forced_reasoning_without_opening_tag(client):
    content, reasoning, calls, finishes, _ = accumulate(ask(client, "r1", "case:r1", stream=True))
    assert (reasoning, content, calls, finishes) == ("The user greets me.", "Hello!", {}, ["stop"])


def test_reasoning_a_template_opened_is_split(client):
    """The prompt ends with `<think>` (the template opened it): the output starts in the reasoning, although
    the model's parser (minimax_m2) is not a force-reasoning one, and its tool call follows."""
    for stream in (True, False):
        resp = ask(client, "minimax-think", "case:opened", tools=TOOLS, stream=stream)
        if stream:
            content, reasoning, calls, finishes, _ = accumulate(resp)
            calls = [(c["name"], json.loads(c["arguments"])) for c in calls.values()]
        else:
            message, finishes = resp.choices[0].message, [resp.choices[0].finish_reason]
            content, reasoning = message.content or "", (message.model_extra or {}).get("reasoning_content")
            calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
        assert reasoning == "The user wants the weather.\n"
        assert (content, calls, finishes) == ("", [("get_weather", {"city": "Paris"})], ["tool_calls"])


def test_no_reasoning_where_the_template_closed_it(client):
    """The prompt ends with an empty `<think></think>` (thinking off): a force-reasoning parser leaves the
    whole output as the answer."""
    content, reasoning, calls, finishes, _ = accumulate(ask(client, "r1-no-think", "case:no-think", stream=True))
    assert (reasoning, content, calls, finishes) == ("", "Hello there!", {}, ["stop"])


def test_tool_result_turn_is_rendered(client):
    first = ask(client, "hermes", "case:hermes", tools=TOOLS).choices[0].message
    messages = [{"role": "user", "content": "case:hermes"}, first.model_dump(exclude_none=True)]
    for call in first.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    resp = client.chat.completions.create(model="hermes", messages=messages, tools=TOOLS, max_tokens=100)
    assert resp.choices[0].message.content == "It is sunny in Paris, 21C."
    assert resp.choices[0].finish_reason == "stop"


def test_tool_choice_none_named_and_parallel(client):
    none = ask(client, "hermes", "case:hermes", tools=TOOLS, tool_choice="none").choices[0]
    assert none.message.tool_calls is None and "<tool_call>" in none.message.content
    named = ask(client, "hermes", "case:hermes", tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    assert [c.function.name for c in named.message.tool_calls] == ["get_time"]
    single = ask(client, "hermes", "case:hermes", tools=TOOLS, parallel_tool_calls=False).choices[0]
    assert [c.function.name for c in single.message.tool_calls] == ["get_weather"]
    _, _, calls, finishes, _ = accumulate(ask(client, "hermes", "case:hermes", tools=TOOLS, stream=True,
                                              parallel_tool_calls=False))
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and finishes == ["tool_calls"]


def test_required_and_named_are_the_json_a_grammar_bound_engine_writes(client):
    """tool_choice required / named on a worker with a format parser (hermes) whose engine holds output to
    grammars (vLLM's; the card says so): the engine is asked for bare JSON, as vLLM and NVIDIA Dynamo ask, and
    that JSON is the call, unary and streamed. On an engine that ignores grammars the model's own format is
    read (test_tool_choice_none_named_and_parallel), and a named choice the model did not call answers its
    text, not nothing."""
    named = ask(client, "hermes-grammar", "case:guided-named", tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    assert [c.function.name for c in named.message.tool_calls] == ["get_time"]
    assert json.loads(named.message.tool_calls[0].function.arguments) == {"zone": "Europe/Paris"}
    assert named.finish_reason == "tool_calls" and not named.message.content
    required = ask(client, "hermes-grammar", "case:guided-required", tools=TOOLS,
                   tool_choice="required").choices[0]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in required.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    content, _, calls, finishes, _ = accumulate(ask(client, "hermes-grammar", "case:guided-required", tools=TOOLS,
                                                    tool_choice="required", stream=True))
    assert not content and calls[0]["name"] == "get_weather" and finishes == ["tool_calls"]
    other = ask(client, "hermes", "case:long-args", tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    assert other.message.tool_calls is None and other.message.content.startswith("<tool_call>")


def test_a_call_cut_short_is_the_same_call_streamed_or_not(client):
    """Arguments that never became JSON: the stream sent the call's pieces as they came, so the unary answer is
    that call too (OpenAI's answer for a call cut short), and both say `stop`, not `tool_calls`."""
    unary = ask(client, "hermes", "case:cut-call", tools=TOOLS).choices[0]
    assert unary.finish_reason == "stop" and not unary.message.content
    assert [(c.function.name, c.function.arguments) for c in unary.message.tool_calls] == [
        ("get_weather", '{"city": ')]
    content, _, calls, finishes, _ = accumulate(ask(client, "hermes", "case:cut-call", tools=TOOLS, stream=True))
    assert (content, [(c["name"], c["arguments"]) for c in calls.values()], finishes) == (
        "", [("get_weather", '{"city": ')], ["stop"])


def test_tools_without_tool_choice_mean_auto(client):
    """OpenAI's default: tools given, no `tool_choice` -> "auto" (both calls parsed, finish
    `tool_calls`); `tool_choice` without tools -> 400 naming `tool_choice`."""
    resp = ask(client, "hermes", "case:hermes", tools=TOOLS).choices[0]
    assert [c.function.name for c in resp.message.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(resp.message.tool_calls[0].function.arguments) == WEATHER
    assert resp.finish_reason == "tool_calls"
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "hermes", "case:hermes", tool_choice="auto")
    assert info.value.body["param"] == "tool_choice"


def test_malformed_call_degrades_to_content(client):
    resp = ask(client, "hermes", "case:malformed", tools=TOOLS).choices[0]
    assert resp.message.content == "<tool_call>{not json}</tool_call> sorry"
    assert resp.message.tool_calls is None and resp.finish_reason == "stop"
    content, _, calls, finishes, _ = accumulate(ask(client, "hermes", "case:malformed", tools=TOOLS, stream=True))
    assert (content, calls, finishes) == ("<tool_call>{not json}</tool_call> sorry", {}, ["stop"])


def test_plain_answer_with_tools_offered(client):
    for parser in CALLS:
        resp = ask(client, parser, "case:plain", tools=TOOLS).choices[0]
        assert (resp.message.content, resp.finish_reason) == ("Just text, no tools.", "stop"), parser


RESPONSE_TOOLS = [{"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]}
                  for t in TOOLS]


def test_responses_unary_and_incomplete(client):
    resp = client.responses.create(model="hermes", input="case:plain")
    assert resp.status == "completed" and resp.output_text == "Just text, no tools."
    assert resp.usage.output_tokens > 0 and resp.usage.input_tokens > 0
    cut = client.responses.create(model="hermes", input="case:plain", max_output_tokens=2)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 2


def test_responses_input_tokens_count_the_prompt_the_model_gets(client):
    """POST /v1/responses/input_tokens with the official client: the count the response's usage
    reports for the same request, tool definitions included."""
    kw = dict(model="hermes", input="case:plain", tools=RESPONSE_TOOLS)
    counted = client.responses.input_tokens.count(**kw)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == client.responses.create(**kw).usage.input_tokens
    assert 0 < client.responses.input_tokens.count(model="hermes", input="case:plain").input_tokens \
        < counted.input_tokens


def test_responses_stream_event_order(client):
    events = list(client.responses.create(model="hermes", input=[{"role": "user", "content": "case:plain"}],
                                          stream=True))
    kinds = [e.type for e in events]
    deltas = [k for k in kinds if k == "response.output_text.delta"]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *deltas, "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", "response.completed"]
    assert len(deltas) >= 1
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Just text, no tools."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "Just text, no tools."
    cut = list(client.responses.create(model="hermes", input="case:plain", max_output_tokens=2, stream=True))
    assert cut[-1].type == "response.incomplete"
    assert cut[-1].response.incomplete_details.reason == "max_output_tokens"


def test_responses_function_calls_and_reasoning(client):
    resp = client.responses.create(model="hermes", input="case:hermes", tools=RESPONSE_TOOLS)
    calls = [o for o in resp.output if o.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER), ("get_time", {})]
    assert all(c.call_id.startswith("call_") for c in calls)
    events = list(client.responses.create(model="qwen3", input="case:think-then-call", tools=RESPONSE_TOOLS,
                                          stream=True))
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "function_call"]
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"} == json.loads(final.output[1].arguments)
    # The call's result goes back as input items and the template renders it.
    follow = client.responses.create(model="hermes", tools=RESPONSE_TOOLS, input=[
        {"role": "user", "content": "case:hermes"},
        *[{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls],
        *[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny, 21C"} for c in calls]])
    assert follow.output_text == "It is sunny in Paris, 21C."


def test_a_stored_response_is_continued_by_id_retrieved_and_deleted(client):
    """`store` (OpenAI's default): the next turn sends only the tool results and the previous
    response's id; the frontend puts the conversation back, so the template renders the results."""
    first = client.responses.create(model="hermes", tools=RESPONSE_TOOLS, input="case:hermes")
    calls = [o for o in first.output if o.type == "function_call"]
    results = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny, 21C"} for c in calls]
    follow = client.responses.create(model="hermes", tools=RESPONSE_TOOLS, previous_response_id=first.id,
                                     input=results)
    assert follow.output_text == "It is sunny in Paris, 21C." and follow.previous_response_id == first.id
    counted = client.responses.input_tokens.count(model="hermes", tools=RESPONSE_TOOLS, input=results,
                                                  previous_response_id=first.id).input_tokens
    assert counted == follow.usage.input_tokens  # the history counts, as the model got it
    assert client.responses.retrieve(first.id).output[0].type == first.output[0].type
    items = client.responses.input_items.list(follow.id, order="asc").data
    assert [i.type for i in items] == ["function_call_output"] * len(calls)
    deleted = httpx.delete(f"{client.base_url}responses/{first.id}", timeout=60)
    assert deleted.json() == {"id": first.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError) as gone:
        client.responses.create(model="hermes", previous_response_id=first.id, input=results)
    assert gone.value.body["code"] == "previous_response_not_found"
    unstored = client.responses.create(model="hermes", input="case:plain", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_a_streamed_response_is_stored_as_completed(client):
    events = list(client.responses.create(model="hermes", tools=RESPONSE_TOOLS, input="case:hermes", stream=True))
    final = events[-1].response
    assert events[-1].type == "response.completed" and final.store is True
    assert client.responses.retrieve(final.id).output[-1].call_id == final.output[-1].call_id
    results = [{"type": "function_call_output", "call_id": o.call_id, "output": "sunny, 21C"}
               for o in final.output if o.type == "function_call"]
    follow = client.responses.create(model="hermes", previous_response_id=final.id, input=results)
    assert follow.output_text == "It is sunny in Paris, 21C."


@pytest.mark.parametrize("path,body,param", [
    ("/v1/responses", {"model": "hermes", "input": []}, "input"),
    ("/v1/responses", {"model": "hermes", "input": [{"type": "image_generation_call"}]}, "input[0].type"),
    ("/v1/responses", {"model": "hermes", "input": [{"role": "user", "content": [1]}]}, "input[0].content"),
    ("/v1/responses", {"model": "hermes", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ("/v1/responses", {"model": "hermes", "input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ("/v1/chat/completions", {"model": "hermes", "messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "yaml"}}, "response_format.type"),
    ("/v1/chat/completions", {"model": "hermes", "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"function": "oops"}]}]}, None),
    ("/v1/embeddings", {"model": "hermes", "input": "x", "dimensions": 8}, "dimensions"),
    ("/v1/embeddings", {"model": "hermes", "input": [1.5]}, "input"),
])
def test_bad_agent_requests_are_400(cluster, path, body, param):
    resp = httpx.post(cluster.base_url + path, json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and (param is None or error["param"] == param)


@pytest.mark.parametrize("model", ["kimi_k2", "glm47", "minimax_m2", "deepseek_v3_2"])
def test_claude_code_against_agent_models_gets_tool_use_blocks(cluster, model):
    """Anthropic's Messages API (how Claude Code is pointed at Kimi, GLM, MiniMax or DeepSeek) over the
    same parsers: tool_use blocks with the arguments as input; Kimi's own call ids kept as the blocks'."""
    client = anthropic.Anthropic(base_url=cluster.base_url, api_key="unused", max_retries=0, timeout=60)
    tools = [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS]
    msg = client.messages.create(model=model, max_tokens=400, tools=tools,
                                 messages=[{"role": "user", "content": f"case:{model}"}])
    assert [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "get_weather", WEATHER),
                                                                ("tool_use", "get_time", {})]
    assert msg.stop_reason == "tool_use"
    if model in MODEL_IDS:
        assert {b.id for b in msg.content} == MODEL_IDS[model]

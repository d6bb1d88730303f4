"""Tool-call edges where a streamed answer and a unary one used to differ, end to end with the official
`openai` client: frontend + a mocker replaying chosen text one token per step (hermes calls). A call whose
argument holds the end marker (`print('</tool_call>')`) is that whole call, not a call cut at the marker
with the rest as text; a named tool_choice the model answered with another function is the text the model
wrote, streamed as unary (no grammar held the model to it here). On a model with no tool-call format, a named
tool_choice's output is that call's arguments and a required one's a JSON list of calls (what the engine is
asked for): whatever the model wrote, JSON or not, cut by `max_tokens` or not, one answer both ways."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_agents import accumulate
from tests.fixtures.tools_model import replaying_workers

pytestmark = pytest.mark.e2e

MODEL = "agent"
PLAIN = "plain"  # no tool-call parser: named reads the whole output as the call's arguments, required a JSON list
PROSE = "Sunny in Paris, I think, and warm."
CODE = {"code": "print('</tool_call>')"}
OTHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SCRIPTS = {
    "case:marker-in-args": 'Running it.\n<tool_call>\n{"name": "run_code", "arguments": ' + json.dumps(CODE)
                           + "}\n</tool_call>",
    "case:other-function": "Let me look.\n" + OTHER,
    "case:prose": PROSE,  # no grammar held the model (the mocker's): not the JSON it was asked for
    "case:args": '{"city": "Paris"}',
    "case:list": '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
    k: {"type": "string"}}}}} for n, k in (("run_code", "code"), ("get_weather", "city"), ("get_time", "zone"))]


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    flags = ["--speedup-ratio", "0", "--dyn-tool-call-parser", "hermes"]
    workers = {MODEL: flags, PLAIN: ["--speedup-ratio", "0"]}
    with replaying_workers(tmp_path_factory.mktemp("tool-edges"), tiny_model, SCRIPTS, workers) as c:
        yield c.openai_client()


def both(client, text: str, model: str = MODEL, max_tokens: int = 400, **kw) -> tuple[tuple, tuple]:
    """(unary, streamed) answers as (content, [(name, arguments)], finish reason)."""
    ask = dict(model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, tools=TOOLS, **kw)
    choice = client.chat.completions.create(**ask).choices[0]
    unary = (choice.message.content or "", [(c.function.name, c.function.arguments)
                                            for c in choice.message.tool_calls or []], choice.finish_reason)
    content, _, calls, finishes, _ = accumulate(client.chat.completions.create(**ask, stream=True))
    return unary, (content, [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)], finishes[-1])


def test_an_end_marker_inside_an_argument_is_the_arguments_text(client):
    unary, streamed = both(client, "case:marker-in-args")
    assert unary == streamed
    content, calls, finish = unary
    assert [(n, json.loads(a)) for n, a in calls] == [("run_code", CODE)]
    assert content == "Running it.\n" and finish == "tool_calls"


def test_a_named_choice_answered_with_another_function_is_the_models_text(client):
    named = {"type": "function", "function": {"name": "get_time"}}
    unary, streamed = both(client, "case:other-function", tool_choice=named)
    assert unary == streamed == (SCRIPTS["case:other-function"], [], "stop")


GET_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
CUT_LIST = 20  # tokens: the list cut inside the call's arguments (`{"city": "`), after its name


@pytest.mark.parametrize("max_tokens", [400, 3])
def test_a_named_call_is_the_output_streamed_as_unary_json_or_not(client, max_tokens):
    """What the model wrote is the named call's arguments, as vLLM and OpenAI answer a forced call: `tool_calls`
    once they are JSON; `stop` or `length` (cut by max_tokens) while they are not, the call all the same."""
    for text, args in (("case:prose", PROSE), ("case:args", '{"city": "Paris"}')):
        unary, streamed = both(client, text, PLAIN, max_tokens, tool_choice=GET_WEATHER)
        assert unary == streamed, text
        content, [(name, got)], finish = unary
        assert (content, name) == ("", "get_weather") and args.startswith(got) and got
        if max_tokens == 3:
            assert finish == "length" and got != args
        else:
            assert (got, finish) == (args, "tool_calls" if text == "case:args" else "stop")


@pytest.mark.parametrize("max_tokens", [400, CUT_LIST])
def test_a_required_call_is_the_same_streamed_as_unary(client, max_tokens):
    """A JSON list of calls is the calls (cut by max_tokens: the call so far, `length`); output that is no list
    is the text, both ways."""
    unary, streamed = both(client, "case:list", PLAIN, max_tokens, tool_choice="required")
    assert unary == streamed
    content, [(name, args)], finish = unary
    assert (content, name) == ("", "get_weather")
    if max_tokens == CUT_LIST:
        assert finish == "length" and '{"city": "Paris"}'.startswith(args) and args != '{"city": "Paris"}'
    else:
        assert (args, finish) == ('{"city": "Paris"}', "tool_calls")
    cut = max_tokens == CUT_LIST
    unary, streamed = both(client, "case:prose", PLAIN, 3 if cut else max_tokens, tool_choice="required")
    assert unary == streamed
    content, calls, finish = unary
    assert calls == [] and PROSE.startswith(content)
    assert (content == PROSE, finish) == ((False, "length") if cut else (True, "stop"))

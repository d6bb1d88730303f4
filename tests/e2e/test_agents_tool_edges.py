"""Tool-call edges where a streamed answer and a unary one used to differ, end to end with the official
`openai` client: frontend + a mocker replaying chosen text one token per step (hermes calls). A call whose
argument holds the end marker (`print('</tool_call>')`) is that whole call, not a call cut at the marker
with the rest as text; a named tool_choice the model answered with another function is the text the model
wrote, streamed as unary (no grammar held the model to it here)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_agents import accumulate
from tests.fixtures.tools_model import replaying_workers

pytestmark = pytest.mark.e2e

MODEL = "agent"
CODE = {"code": "print('</tool_call>')"}
OTHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SCRIPTS = {
    "case:marker-in-args": 'Running it.\n<tool_call>\n{"name": "run_code", "arguments": ' + json.dumps(CODE)
                           + "}\n</tool_call>",
    "case:other-function": "Let me look.\n" + OTHER,
}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
    k: {"type": "string"}}}}} for n, k in (("run_code", "code"), ("get_weather", "city"), ("get_time", "zone"))]


@pytest.fixture(scope="module")
def client(tiny_model, tmp_path_factory):
    flags = ["--speedup-ratio", "0", "--dyn-tool-call-parser", "hermes"]
    with replaying_workers(tmp_path_factory.mktemp("tool-edges"), tiny_model, SCRIPTS, {MODEL: flags}) as c:
        yield c.openai_client()


def both(client, text: str, **kw) -> tuple[tuple, tuple]:
    """(unary, streamed) answers as (content, [(name, arguments)], finish reason)."""
    ask = dict(model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=400, tools=TOOLS, **kw)
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

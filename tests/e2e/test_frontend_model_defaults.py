"""A frontend started as NVIDIA Dynamo's `--dyn-chat-processor vllm` frontends are, with the engine's
parser and template flags on the frontend and none on the worker (`--tool-call-parser hermes
--reasoning-parser qwen3 --chat-template FILE`): the frontend renders with that template and parses
the model's reasoning and tool calls with those parsers. The mocker replays an answer chosen by what
the rendered prompt holds."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.procs import Cluster

pytestmark = pytest.mark.e2e

MODEL = "bare"
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "FRONTEND-TEMPLATE<|im_start|>assistant\n")
ANSWER = ('<think>The user wants the weather.</think>I will look it up.<tool_call>{"name": "get_weather", '
          '"arguments": {"city": "Oslo"}}</tool_call>')


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frontend-defaults")
    (tmp / "template.jinja").write_text(TEMPLATE)
    (tmp / "replay.json").write_text(json.dumps({"FRONTEND-TEMPLATE": ANSWER}))
    c = Cluster(tmp, tiny_model)
    try:
        c.mocker("--replay-file", str(tmp / "replay.json"), model_name=MODEL, system_port=False)  # no parsers
        c.frontend("--dyn-chat-processor", "vllm", "--tool-call-parser", "hermes", "--reasoning-parser", "qwen3",
                   "--enable-auto-tool-choice", "--chat-template", str(tmp / "template.jinja"))
        c.wait_workers(MODEL, 1, timeout=120)
        yield c
    finally:
        c.stop()


def test_the_frontends_template_and_parsers_serve_a_worker_that_names_none(cluster):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    resp = cluster.openai_client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=tools, max_tokens=80)
    message = resp.choices[0].message
    assert message.model_extra.get("reasoning_content") == "The user wants the weather."
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert resp.choices[0].finish_reason == "tool_calls"

"""Frontend + `python -m dynamo.vllm` (CPU, tiny random-weight Llama): `n > 1` fanned
out to the engine, logprobs equal to vLLM's own for the same request, and structured
output (`response_format` json_schema / json_object, guided extras) that parses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from tests.vllm.conftest import BLOCK_SIZE, MAX_MODEL_LEN, MODEL, reference_result, start_offline, worker_beside_reference

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

PROMPT = [6 + (i * 53) % 4000 for i in range(24)]
MAX_TOKENS = 12
TOP = 3
SCHEMA = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["city", "days"], "additionalProperties": False}


def offline_logprobs(python: Path, model: Path, log_path: Path) -> subprocess.Popen:
    return start_offline(python, "offline_logprobs.py", [str(model), json.dumps([PROMPT]), str(MAX_TOKENS), str(TOP),
                                                         str(BLOCK_SIZE), str(MAX_MODEL_LEN)], log_path)


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-agents")
    # Flags a manifest written for NVIDIA Dynamo's image passes: vLLM's own, Dynamo's card settings,
    # and Dynamo runtime flags that have no effect here (accepted with a warning, not a crash).
    worker_args = ["--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
                   "--dyn-default-thinking-mode", "disabled", "--request-plane", "tcp", "--router-mode", "kv"]
    with worker_beside_reference(tmp, vllm_model, vllm_python, worker_args,
                                 lambda log: offline_logprobs(vllm_python, vllm_model, log)) as (cluster, reference):
        yield {"cluster": cluster, "reference": reference_result(reference)[0]}


@pytest.fixture()
def client(env):
    return openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x", max_retries=0, timeout=180)


def test_a_worker_started_with_dynamos_flags_serves_and_says_which_have_no_effect(env):
    log = env["cluster"].procs[0].log_path.read_text(errors="replace")
    for flag in ("--request-plane", "--router-mode"):
        assert f"{flag} is accepted for compatibility with NVIDIA Dynamo and has no effect" in log, log[-3000:]


def test_logprobs_equal_vllm_offline(env, client):
    ref = env["reference"]
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0,
                                     logprobs=TOP)
    lp = resp.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx(ref["logprobs"], abs=1e-3)
    for ours, theirs in zip(lp.top_logprobs, ref["top"]):
        assert sorted(ours.values(), reverse=True) == pytest.approx([v for _, v in theirs], abs=1e-3)
    chat_items = []
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0,
                                       logprobs=TOP, stream=True)
    for chunk in stream:
        for ch in chunk.choices:
            if ch.logprobs:
                chat_items += ch.logprobs.token_logprobs
    assert chat_items == pytest.approx(ref["logprobs"], abs=1e-3)


def test_n_three_choices(client):
    resp = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, n=3, temperature=1.0, seed=11)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert len({c.text for c in resp.choices}) == 3
    assert resp.usage.completion_tokens == sum(8 for _ in resp.choices)
    again = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, n=3, temperature=1.0, seed=11)
    assert [c.text for c in again.choices] == [c.text for c in resp.choices]


def test_json_schema_response_validates(client):
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Plan a trip"}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}})
    value = json.loads(resp.choices[0].message.content)
    assert set(value) == {"city", "days"} and value["city"] in ("Paris", "Rome", "Oslo")
    assert isinstance(value["days"], int) and 1 <= value["days"] <= 9


def test_guided_choice_and_json_object(client):
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Pick"}],
                                          max_tokens=10, extra_body={"guided_choice": ["yes", "no"]})
    assert resp.choices[0].message.content in ("yes", "no")
    obj = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "JSON"}],
                                         max_tokens=200, temperature=0, response_format={"type": "json_object"})
    if obj.choices[0].finish_reason == "stop":  # a random model may run out of tokens mid-object
        assert isinstance(json.loads(obj.choices[0].message.content), dict)
    else:
        assert obj.choices[0].message.content.lstrip().startswith("{")


def test_named_tool_choice_is_enforced_by_the_engine(client):
    tools = [{"type": "function", "function": {"name": "plan_trip", "parameters": SCHEMA}}]
    resp = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Plan a trip"}], max_tokens=60, temperature=0,
        tools=tools, tool_choice={"type": "function", "function": {"name": "plan_trip"}})
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "plan_trip" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert args["city"] in ("Paris", "Rome", "Oslo") and 1 <= args["days"] <= 9

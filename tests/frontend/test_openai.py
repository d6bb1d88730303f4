"""Request validation and conversion (dynamo/frontend/openai.py, validation.py) with no server: every bad
input is a 400 with an OpenAI-shaped error naming the field."""

from __future__ import annotations

import json
import shutil

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import decode_request
from dynamo.frontend.validation import validate_chat, validate_completion
from dynamo.frontend.preparation import chat_text
from dynamo.frontend.responses_request import decode_responses
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.token_cache import TokenCache

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}


def chat(**over):
    return decode_request(json.dumps({**CHAT, **over}).encode(), "chat")


def completion(**over):
    return decode_request(json.dumps({**COMPLETION, **over}).encode(), "completion")


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    err = info.value
    assert err.status == 400
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    assert err.body()["error"]["type"] == "invalid_request_error"
    return err


def test_valid_requests_pass_and_convert():
    req = chat(temperature=0.5, top_p=0.9, top_k=40, min_p=0.1, seed=3, stop="END", min_tokens=2, ignore_eos=True,
               presence_penalty=1.5, frequency_penalty=-1, repetition_penalty=1.1, unknown_vendor_field={"x": 1})
    validate_chat(req)
    wire = req.to_request([1, 2], "id", "m", 7, [0])
    so = wire.sampling_options
    assert (so.temperature, so.top_p, so.top_k, so.min_p, so.seed) == (0.5, 0.9, 40, 0.1, 3)
    assert (so.presence_penalty, so.frequency_penalty, so.repetition_penalty) == (1.5, -1, 1.1)
    sc = wire.stop_conditions
    assert (sc.max_tokens, sc.stop, sc.min_tokens, sc.ignore_eos) == (7, ["END"], 2, True)
    assert chat().to_request([1], "id", "m", 1, []).stop_conditions.stop is None
    for prompt in ("text", ["text"], [1, 2, 3], [[1, 2, 3]]):
        validate_completion(completion(prompt=prompt))


@pytest.mark.parametrize("body,param,code", [
    (b"{not json", None, "invalid_json"),
    (b'{"messages": []}', "model", "invalid_type"),
    (json.dumps({**CHAT, "temperature": "hot"}).encode(), "temperature", "invalid_type"),
    (json.dumps({**CHAT, "messages": [{"content": "no role"}]}).encode(), "messages[0]", "invalid_type"),
])
def test_decode_errors_name_the_field(body, param, code):
    err = refused(decode_request, body, "chat")
    assert (err.param, err.code) == (param, code), err.body()


@pytest.mark.parametrize("field,value", [
    ("max_tokens", 0), ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0.0), ("top_p", 1.5),
    ("min_p", 1.5), ("presence_penalty", 3), ("frequency_penalty", -3), ("repetition_penalty", 0),
    ("top_k", -2), ("n", 0), ("min_tokens", -1), ("logprobs", -1), ("stop", [""]), ("stop", ["x"] * 17), ("stop", ["x" * 4097]),
    ("model", ""),
])
def test_common_range_checks(field, value):
    err = refused(validate_chat, chat(**{field: value}))
    assert err.param == field
    err = refused(validate_completion, completion(**{field: value}))
    assert err.param == field


def test_boundaries_are_accepted():
    validate_chat(chat(temperature=0, top_p=1.0, top_k=-1, n=1, max_tokens=1, min_tokens=0, stop=["x"] * 16,
                       presence_penalty=-2, frequency_penalty=2, logprobs=False))


@pytest.mark.parametrize("over,param,code", [
    ({"messages": []}, "messages", "invalid_value"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
    ({"tools": [{"type": "function"}], "tool_choice": "auto"}, "tools[0]", "invalid_type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"},
                                                {"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[1].type", "unsupported_content"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "unsupported_parameter"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions", "unsupported_parameter"),
    ({"function_call": {"name": "f"}}, "function_call", "unsupported_parameter"),
    ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "unsupported_parameter"),
    ({"web_search_options": {}}, "web_search_options", "unsupported_parameter"),
])
def test_chat_specific_checks(over, param, code):
    err = refused(validate_chat, chat(**over))
    assert (err.param, err.code) == (param, code)


def test_tools_with_tool_choice_none_are_accepted():
    validate_chat(chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="none"))


def test_tool_choice_defaults_like_openai():
    """No `tool_choice`: "auto" when tools are given (calls are parsed, the template sees the
    tools), "none" without; a choice other than "none" without tools is refused."""
    tools = [{"type": "function", "function": {"name": "f"}}]
    req = chat(tools=tools)
    validate_chat(req)
    assert (req.tool_choice_mode(), req.template_tools()) == ("auto", tools)
    assert chat().tool_choice_mode() == "none"
    validate_chat(chat(tool_choice="none"))
    for choice in ("auto", "required", {"type": "function", "function": {"name": "f"}}):
        err = refused(validate_chat, chat(tool_choice=choice))
        assert (err.param, err.code) == ("tool_choice", "invalid_value"), choice


@pytest.mark.parametrize("over,code", [
    ({"echo": True, "logprobs": 1}, "unsupported_parameter"), ({"best_of": 2}, "unsupported_value"),
    ({"suffix": "x"}, "unsupported_parameter"), ({"prompt": []}, "invalid_value"),
    ({"prompt": [1, "a"]}, "invalid_type"), ({"prompt": [[1], []]}, "invalid_value"),
    ({"prompt": [True, False]}, "invalid_type"), ({"prompt": ["a", [2]]}, "invalid_type"),
    ({"prompt": [[1], [2]] * 65}, "invalid_value"),  # batched prompts: at most 128 choices in all
])
def test_completion_specific_checks(over, code):
    err = refused(validate_completion, completion(**over))
    assert err.code == code
    assert err.param == next(iter(over))


def test_greed_sampling_overrides_the_sampling_fields():
    req = chat(temperature=1.5, top_k=50, nvext={"greed_sampling": True})
    validate_chat(req)
    so = req.to_request([1], "id", "m", 4, []).sampling_options
    assert (so.temperature, so.top_k) == (0.0, 1)
    so = chat(temperature=1.5, nvext={"greed_sampling": False}).to_request([1], "id", "m", 4, []).sampling_options
    assert so.temperature == 1.5 and so.top_k is None
    assert refused(validate_chat, chat(nvext={"greed_sampling": "yes"})).param == "nvext.greed_sampling"
    assert refused(validate_completion, completion(n=2, nvext={"greed_sampling": True})).param == \
        "nvext.greed_sampling"  # n identical answers


def test_integers_in_stop_are_stop_token_ids():
    req = chat(stop=["END", 576, "\n\n", 2])
    validate_chat(req)
    sc = req.to_request([1], "id", "m", 4, []).stop_conditions
    assert sc.stop == ["END", "\n\n"] and sc.stop_token_ids_hidden == [576, 2]
    assert chat(stop="END").to_request([1], "id", "m", 4, []).stop_conditions.stop_token_ids_hidden is None
    assert refused(validate_chat, chat(stop=["x", -1])).param == "stop"
    assert refused(validate_chat, chat(stop=list(range(17)))).param == "stop"


def test_max_thinking_tokens_reaches_the_stop_conditions():
    req = chat(nvext={"max_thinking_tokens": 64})
    validate_chat(req)
    assert req.to_request([1], "id", "m", 4, []).stop_conditions.max_thinking_tokens == 64
    assert chat().to_request([1], "id", "m", 4, []).stop_conditions.max_thinking_tokens is None
    for bad in (-1, 1.5, "64", True):
        assert refused(validate_chat, chat(nvext={"max_thinking_tokens": bad})).param == "nvext.max_thinking_tokens"


def test_vllms_thinking_token_budget_is_the_same_budget_and_nvext_wins():
    assert chat(thinking_token_budget=32).to_request([1], "id", "m", 4, []).stop_conditions.max_thinking_tokens == 32
    both = chat(thinking_token_budget=32, nvext={"max_thinking_tokens": 8})
    assert both.to_request([1], "id", "m", 4, []).stop_conditions.max_thinking_tokens == 8
    assert refused(validate_chat, chat(thinking_token_budget=-3)).param == "thinking_token_budget"
    completion_req = completion(thinking_token_budget=5)
    validate_completion(completion_req)
    assert completion_req.to_request([1], "id", "m", 4, []).stop_conditions.max_thinking_tokens == 5


def test_dynamos_chat_template_args_are_the_template_kwargs_and_the_openai_name_wins():
    assert chat(chat_template_args={"enable_thinking": False}).template_kwargs() == {"enable_thinking": False}
    both = chat(chat_template_args={"a": 1}, chat_template_kwargs={"b": 2})
    assert both.template_kwargs() == {"b": 2}
    assert chat(chat_template_args={"x": 1}, reasoning_effort="low").template_kwargs() == \
        {"enable_thinking": True, "x": 1, "reasoning_effort": "low"}


def test_reasoning_effort_is_a_template_variable_and_turns_thinking_on_or_off():
    assert chat(reasoning_effort="high").template_kwargs() == {"reasoning_effort": "high", "enable_thinking": True}
    assert chat(reasoning_effort="none").template_kwargs() == {"reasoning_effort": "none", "enable_thinking": False}
    both = chat(reasoning_effort="none", chat_template_kwargs={"reasoning_effort": "low", "enable_thinking": True})
    assert both.template_kwargs() == {"reasoning_effort": "none", "enable_thinking": True}  # as vLLM merges them
    assert chat(chat_template_kwargs={"x": 1}).template_kwargs() == {"x": 1}
    validate_chat(chat(reasoning_effort="minimal"))
    assert refused(validate_chat, chat(reasoning_effort="extreme")).param == "reasoning_effort"


def test_the_effort_reaches_the_prompt_through_the_models_template(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    (model / "chat_template.jinja").write_text(  # as gpt-oss's template states its level
        "{% if reasoning_effort is defined %}Reasoning: {{ reasoning_effort }}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    pipeline = ModelPipeline(build_card(model, name="tiny", block_size=16, context_length=4096), TokenCache(1 << 20))
    assert chat_text(pipeline, chat(reasoning_effort="high")).startswith("Reasoning: high\n")
    assert chat_text(pipeline, chat()).startswith("user: hi")
    responses = decode_responses(json.dumps({"model": "m", "input": "hi", "reasoning": {"effort": "low"}}).encode())
    assert chat_text(pipeline, responses.to_chat()).startswith("Reasoning: low\n")


def test_unserved_fields_left_empty_or_at_their_defaults_are_accepted():
    validate_chat(chat(logit_bias={}, functions=[], function_call="auto", modalities=["text"]))
    validate_completion(completion(logit_bias=None))
    assert refused(validate_completion, completion(logit_bias={"1": 5})).param == "logit_bias"


def test_required_and_named_tool_choices_ask_the_engine_for_json():
    """As vLLM and NVIDIA Dynamo do: the grammar holds the engine to the call (named: its arguments;
    required: a list of {name, parameters}); `auto` and `none` ask nothing."""
    params = {"type": "object", "properties": {"zone": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": params}},
             {"type": "function", "function": {"name": "get_weather"}}]
    named = chat(tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}})
    required = chat(tools=tools, tool_choice="required")
    assert named.guided_decoding(True).json == params
    schema = required.guided_decoding(True).json
    assert schema["type"] == "array" and schema["minItems"] == 1 and len(schema["items"]["anyOf"]) == 2
    for tool_json in (True, False):
        assert chat(tools=tools).guided_decoding(tool_json) is None
        assert chat(tools=tools, tool_choice="none").guided_decoding(tool_json) is None
    # a format parser on an engine that ignores grammars (preparation.forced_tool_json): nothing asked
    assert named.guided_decoding(False) is None and required.guided_decoding(False) is None
    # response_format holds the final answer only: a turn that must call a tool is never held to it
    # (test_tool_guidance.py), whichever format the engine writes the call in.
    formatted = chat(tools=tools, tool_choice="required", response_format={"type": "json_object"})
    assert formatted.guided_decoding(False) is None and formatted.guided_decoding(True).json["type"] == "array"


def test_allowed_tools_keep_only_the_listed_functions():
    """OpenAI's tool_choice `allowed_tools`: the model may call only the listed functions (`required`: one of
    them); served as that subset of `tools` with the mode as tool_choice, on chat and the Responses API."""
    tools = [{"type": "function", "function": {"name": n}} for n in ("get_time", "get_weather", "search")]
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_time"}}, {"type": "function", "function": {"name": "search"}}]}}
    req = chat(tools=tools, tool_choice=choice)
    validate_chat(req)
    assert [t["function"]["name"] for t in req.tools] == ["get_time", "search"] and req.tool_choice == "required"
    assert len(req.guided_decoding(True).json["items"]["anyOf"]) == 2
    unknown = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "nope"}}]}}
    assert refused(validate_chat, chat(tools=tools, tool_choice=unknown)).param == "tool_choice.allowed_tools.tools[0]"
    bad_mode = {"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}}
    assert refused(validate_chat, chat(tools=tools, tool_choice=bad_mode)).param == "tool_choice.allowed_tools"
    responses = decode_responses(json.dumps({
        "model": "m", "input": "hi", "tools": [{"type": "function", "name": n} for n in ("a", "b")],
        "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "b"}]}}).encode())
    converted = responses.to_chat()
    validate_chat(converted)
    assert [t["function"]["name"] for t in converted.tools] == ["b"] and converted.tool_choice == "auto"

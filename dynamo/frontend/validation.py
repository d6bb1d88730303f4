"""Validation of OpenAI requests (chat and completions) after decoding: each field a client got
wrong is a 400 naming it, before anything is templated or routed. The schema itself (and what a
decode refuses) is `openai.py`."""

from __future__ import annotations

import math
from typing import Any

from dynamo.frontend.errors import bad_request
from dynamo.frontend.openai import ChatCompletionRequest, CompletionRequest, stop_list, stop_token_ids
from dynamo.llm.preprocessor import final_message_text

MAX_N = 128
MAX_TOP_LOGPROBS = 20
# OpenAI's reasoning levels (and vLLM's "max"), passed to the chat template (gpt-oss's reads low/medium/high).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
CONTENT_PARTS = ("text", "refusal")  # an assistant's refusal is text too
IMAGE_PART = "image_url"


def _check_range(value: float | int | None, name: str, low: float, high: float, low_open: bool = False) -> None:
    if value is None:
        return
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad_request(f"`{name}` must be in {bracket}{low}, {high}], got {value}", name)


def validate_common(req: ChatCompletionRequest | CompletionRequest) -> None:
    if not req.model:
        raise bad_request("`model` must be a non-empty string", "model")
    if req.max_tokens is not None and req.max_tokens < 1:
        raise bad_request(f"`max_tokens` must be at least 1, got {req.max_tokens}", "max_tokens")
    _check_range(req.temperature, "temperature", 0.0, 2.0)
    _check_range(req.top_p, "top_p", 0.0, 1.0, low_open=True)
    _check_range(req.min_p, "min_p", 0.0, 1.0)
    _check_range(req.presence_penalty, "presence_penalty", -2.0, 2.0)
    _check_range(req.frequency_penalty, "frequency_penalty", -2.0, 2.0)
    if req.repetition_penalty is not None and req.repetition_penalty <= 0:
        raise bad_request("`repetition_penalty` must be > 0", "repetition_penalty")
    if req.top_k is not None and req.top_k < -1:
        raise bad_request("`top_k` must be -1 (disabled) or positive", "top_k")
    if req.n is not None and not 1 <= req.n <= MAX_N:
        raise bad_request(f"`n` must be in [1, {MAX_N}], got {req.n}", "n")
    field, thinking = req.thinking_budget()
    if thinking is not None and (isinstance(thinking, bool) or not isinstance(thinking, int) or thinking < 0):
        raise bad_request(f"{field} must be an integer >= 0, got {thinking!r}", field, "invalid_value")
    greed = (req.nvext or {}).get("greed_sampling")
    if greed is not None and not isinstance(greed, bool):
        raise bad_request(f"nvext.greed_sampling must be a boolean, got {greed!r}", "nvext.greed_sampling",
                          "invalid_type")
    check_router_params((req.nvext or {}).get("router"))
    if (req.n or 1) > 1 and (req.temperature == 0 or greed):
        # Dynamo's rule: n identical greedy samples are a client mistake, not a request.
        raise bad_request("When n > 1, temperature must be greater than 0",
                          "nvext.greed_sampling" if greed else "temperature")
    if req.min_tokens is not None and req.min_tokens < 0:
        raise bad_request("`min_tokens` must be >= 0", "min_tokens")
    if req.min_tokens is not None and req.requested_max_tokens() is not None and \
            req.min_tokens > req.requested_max_tokens():
        raise bad_request("`min_tokens` must be at most the maximum number of tokens to generate", "min_tokens")
    if req.stream_options is not None and not req.stream:
        raise bad_request("`stream_options` is only allowed when `stream` is true", "stream_options")
    if req.logit_bias:
        raise bad_request("`logit_bias` is not supported: the engines here are not given token biases",
                          "logit_bias", "unsupported_parameter")
    stops, ids = stop_list(req.stop), stop_token_ids(req.stop)
    if len(stops) + len(ids) > 16:
        raise bad_request("at most 16 stop sequences are supported", "stop")
    if any(not s for s in stops):
        raise bad_request("stop sequences must be non-empty strings", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):  # matching one is linear in its length, per request
        raise bad_request(f"stop sequences must be at most {MAX_STOP_CHARS} characters", "stop")
    if any(i < 0 for i in ids):
        raise bad_request("stop token ids must be >= 0", "stop")


ROUTER_PARAMS = ("ttft_target", "itl_target")
MAX_STOP_CHARS = 4096


def check_router_params(given: Any) -> None:
    """`nvext.router`: an object of SLA targets in milliseconds, each a number >= 0; as in NVIDIA
    Dynamo, an unknown key is refused (a misspelt target would silently route by the default)."""
    if given is None:
        return
    if not isinstance(given, dict):
        raise bad_request("nvext.router must be an object", "nvext.router", "invalid_type")
    for key, value in given.items():
        param = f"nvext.router.{key}"
        if key not in ROUTER_PARAMS:
            raise bad_request(f"unknown field {param}; known: {', '.join(ROUTER_PARAMS)}", param, "unknown_parameter")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad_request(f"{param} must be a number of milliseconds >= 0, got {value!r}", param, "invalid_value")


def validate_chat(req: ChatCompletionRequest) -> None:
    validate_common(req)
    _refuse_unserved(req)
    if not req.messages:
        raise bad_request("`messages` must contain at least one message", "messages")
    if req.max_completion_tokens is not None and req.max_completion_tokens < 1:
        raise bad_request("`max_completion_tokens` must be at least 1", "max_completion_tokens")
    if req.logprobs is not None and not isinstance(req.logprobs, bool):
        raise bad_request("`logprobs` must be a boolean for chat completions", "logprobs", "invalid_type")
    if req.top_logprobs is not None:
        if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
            raise bad_request(f"`top_logprobs` must be in [0, {MAX_TOP_LOGPROBS}]", "top_logprobs")
        if not req.logprobs:
            raise bad_request("`top_logprobs` requires `logprobs: true`", "top_logprobs")
    if req.reasoning_effort is not None and req.reasoning_effort not in REASONING_EFFORTS:
        raise bad_request(f"`reasoning_effort` must be one of {', '.join(REASONING_EFFORTS)}", "reasoning_effort")
    _validate_content(req)
    validate_tools(req)
    validate_response_format(req.response_format)
    _validate_prefill(req)


def _validate_prefill(req: ChatCompletionRequest) -> None:
    """vLLM's rules for an assistant prefill: it continues a final message that has text, and an answer
    that continues the final message opens no new turn."""
    if not req.continue_final_message:
        return
    if req.generation_prompt():
        raise bad_request("`continue_final_message` and `add_generation_prompt` cannot both be true",
                          "continue_final_message")
    if not final_message_text(req.messages[-1].content).strip():
        raise bad_request("`continue_final_message` needs a final message with text to continue",
                          "continue_final_message")


def _validate_content(req: ChatCompletionRequest) -> None:
    """Text parts, and `image_url` parts whose model reads images (`media_input.py` judges that and the
    URLs): audio and files reach no worker here, and a model that answered without them would answer wrongly."""
    for i, message in enumerate(req.messages):
        if message.content is None and message.role in ("user", "system", "developer"):
            # OpenAI's rule: only an assistant message (its tool calls) or a tool result may leave it out
            raise bad_request(f"a {message.role} message needs `content`", f"messages[{i}].content")
        if message.role == "tool" and message.tool_call_id is None:
            # OpenAI's and Dynamo's rule: a tool result names the call it answers (templates render it so)
            raise bad_request("a tool message needs `tool_call_id`: the id of the call it answers",
                              f"messages[{i}].tool_call_id", "missing_required_parameter")
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == IMAGE_PART:
                image_part_url(part, f"messages[{i}].content[{j}]")
            elif kind not in CONTENT_PARTS:
                raise bad_request(f"content part type {kind!r} is not supported: models served here take text and, "
                                  f"where their workers read them, images (parts: {', '.join(CONTENT_PARTS)}, "
                                  f"{IMAGE_PART})", f"messages[{i}].content[{j}].type", "unsupported_content")
            elif not isinstance(part.get(kind, ""), str):  # a text part's `text`, a refusal part's `refusal`
                raise bad_request(f"a {kind} part's `{kind}` must be a string", f"messages[{i}].content[{j}].{kind}",
                                  "invalid_type")


def image_part_url(part: dict, where: str) -> str:
    """The URL of an `image_url` part (`{"url": ..., "detail": ...}`, or the URL itself); 400 when malformed."""
    image = part.get(IMAGE_PART)
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise bad_request("an image_url part needs `image_url.url`, a non-empty string", f"{where}.image_url.url",
                          "invalid_type")
    if isinstance(image, dict) and image.get("detail") not in (None, "auto", "low", "high"):
        raise bad_request("`image_url.detail` must be auto, low or high", f"{where}.image_url.detail")
    return url


def validate_completion(req: CompletionRequest) -> None:
    validate_common(req)
    if req.echo and req.logprobs is not None:
        # Echoed prompt tokens would need prompt logprobs, which workers do not return.
        raise bad_request("`echo` with `logprobs` is not supported", "echo", "unsupported_parameter")
    if req.logprobs is not None and (not _is_int(req.logprobs) or not 0 <= req.logprobs <= 5):
        raise bad_request("`logprobs` must be an integer in [0, 5] for completions", "logprobs")
    if req.best_of not in (None, 1):
        raise bad_request("`best_of` other than 1 is not supported", "best_of", "unsupported_value")
    if req.suffix:
        raise bad_request("`suffix` is not supported", "suffix", "unsupported_parameter")
    prompt = req.prompt
    if isinstance(prompt, list):
        if not prompt:
            raise bad_request("`prompt` must not be empty", "prompt")
        batched = len(prompt) > 1 and isinstance(prompt[0], (str, list))  # a one-element list is one prompt
        if not _is_prompt_list(prompt, batched):  # first: a long list of anything is this 400, checked in C
            raise bad_request("`prompt` must be a string, a list of strings, a list of token ids or a list of "
                              "token-id lists", "prompt", "invalid_type")
        if batched:
            _check_batch(prompt, req.choices())


def _check_batch(prompts: list[Any], n: int) -> None:
    """Batched prompts (`prompt_batch.py`): each one a prompt of its own, and `n` choices of each, at most
    MAX_N choices in all (NVIDIA Dynamo's rule)."""
    if len(prompts) * n > MAX_N:  # before any walk of a long list
        raise bad_request(f"{len(prompts)} prompts with n={n} ask for {len(prompts) * n} choices; at most {MAX_N} "
                          "are served in one request", "prompt")
    empty = next((i for i, p in enumerate(prompts) if not p), None)
    if empty is not None:
        raise bad_request(f"`prompt[{empty}]` must not be empty", "prompt")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prompt_list(prompt: list[Any], batched: bool = False) -> bool:
    # Type sets are built in C: a 5,000-token prompt is checked in well under a millisecond
    # on the event loop (a per-element isinstance walk took ~2 ms). bool is not an int here.
    types = set(map(type, prompt))
    if types == {str} or types == {int}:
        return True
    # a batch's empty token-id list is `_check_batch`'s 400, naming it
    return types == {list} and all(set(map(type, p)) == {int} if p else batched for p in prompt)


def validate_response_format(fmt: dict[str, Any] | None) -> None:
    if fmt is None:
        return
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise bad_request("`response_format.type` must be text, json_object or json_schema", "response_format.type")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request("`response_format.json_schema` must be an object with a `schema` object",
                              "response_format.json_schema")


def validate_tools(req: ChatCompletionRequest) -> None:
    names = []
    for i, tool in enumerate(req.tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request("each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                              f"tools[{i}]", "invalid_type")
        params = fn.get("parameters")
        if params is not None and (not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict)):
            raise bad_request("a function's `parameters` must be a JSON Schema object (its `properties` an object)",
                              f"tools[{i}].function.parameters", "invalid_type")
        names.append(fn["name"])
    choice = req.tool_choice
    # OpenAI: no `tool_choice` means "auto" when tools are given (`tool_choice_mode`), "none" without;
    # any choice but "none" without tools is refused.
    if choice is None or choice == "none":
        return
    if not names and (choice in ("auto", "required") or isinstance(choice, dict)):
        raise bad_request("`tool_choice` is only allowed when `tools` are given", "tool_choice")
    if choice in ("auto", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        apply_allowed_tools(req, names)
        return
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if choice.get("type", "function") != "function" or not isinstance(name, str):
            raise bad_request("`tool_choice` object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                              "tool_choice", "invalid_type")
        if name not in names:
            raise bad_request(f"`tool_choice` names function {name!r}, which is not in `tools`", "tool_choice")
        return
    raise bad_request("`tool_choice` must be \"none\", \"auto\", \"required\", a named function or allowed_tools",
                      "tool_choice")


def apply_allowed_tools(req: ChatCompletionRequest, names: list[str]) -> None:
    """OpenAI's `{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}`: the model may call only the
    functions listed (`required`: one of them). Served as the listed subset of `tools` with `tool_choice`
    set to the mode, so the prompt, the output parser and a forced-JSON schema all see only those."""
    spec = req.tool_choice.get("allowed_tools")
    listed = spec.get("tools") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or spec.get("mode") not in ("auto", "required") or not isinstance(listed, list) \
            or not listed:
        raise bad_request("`tool_choice.allowed_tools` must be {\"mode\": \"auto\" or \"required\", \"tools\": "
                          "[{\"type\": \"function\", \"function\": {\"name\": ...}}, ...]}",
                          "tool_choice.allowed_tools", "invalid_type")
    allowed = set()
    for i, tool in enumerate(listed):
        fn = tool.get("function") if isinstance(tool, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        param = f"tool_choice.allowed_tools.tools[{i}]"
        if not isinstance(name, str) or tool.get("type", "function") != "function":
            raise bad_request("each allowed tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                              param, "invalid_type")
        if name not in names:
            raise bad_request(f"`tool_choice.allowed_tools` names function {name!r}, which is not in `tools`", param)
        allowed.add(name)
    req.tools = [t for t in req.tools or [] if t["function"]["name"] in allowed]
    req.tool_choice = spec["mode"]


def _refuse_unserved(req: ChatCompletionRequest) -> None:
    """Fields that would change the answer and that nothing here serves: a 400, never silently dropped."""
    if req.functions or req.function_call not in (None, "none", "auto"):
        name = "functions" if req.functions else "function_call"
        raise bad_request(f"`{name}` (legacy function calling) is not supported: send the functions as `tools`",
                          name, "unsupported_parameter")
    if req.modalities not in (None, ["text"]) or req.audio is not None:
        name = "audio" if req.audio is not None else "modalities"
        raise bad_request("only text output is served: no model here answers with audio", name,
                          "unsupported_parameter")
    if req.web_search_options is not None:
        raise bad_request("`web_search_options` is not supported: models here cannot search the web",
                          "web_search_options", "unsupported_parameter")

"""The Responses API request (`POST /v1/responses`, `/v1/responses/input_tokens`): its type, its
conversion to the chat request it runs as (input items, instructions, a previous response's
conversation, function tools, text format), and the Responses field names its refusals carry."""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import msgspec

from dynamo.frontend.errors import ApiError, bad_request, not_one_of
from dynamo.frontend.openai import I64, ChatCompletionRequest, ChatMessage, decode_body
from dynamo.frontend.validation import MAX_TOP_LOGPROBS

# The `include` value that asks for the output text's token logprobs.
TEXT_LOGPROBS = "message.output_text.logprobs"
# Every `include` value OpenAI's API takes (the openai SDK's ResponseIncludable); the others name data of
# tools not served here: accepted, with nothing to add. Any other value is refused, as OpenAI refuses it.
INCLUDABLE = ("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
              "message.input_image.image_url", "computer_call_output.output.image_url",
              "code_interpreter_call.outputs", "reasoning.encrypted_content", TEXT_LOGPROBS)
# The roles a message input item may have (OpenAI's): tool results come as function_call_output items.
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# JSON types as OpenAI's refusals name them.
_JSON_TYPES = {str: "a string", float: "a decimal number", list: "an array", dict: "an object", bool: "a boolean"}


# Chat's field names in the refusals of a request that came as a Responses one: the client's own names.
OWN_NAMES = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
             "response_format": "text.format", "reasoning_effort": "reasoning.effort"}


@contextlib.contextmanager
def own_names() -> Iterator[None]:
    """Refusals raised inside name the Responses request's fields, not the chat request's it became."""
    try:
        yield
    except ApiError as exc:
        head = re.split(r"[.\[]", exc.param or "", maxsplit=1)[0]
        if head in OWN_NAMES:
            exc.param = OWN_NAMES[head]
        raise


class ResponsesRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: I64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool | None = False  # null: the default (`__post_init__`), as for every `bool | None = <bool>` here
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    seed: I64 | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    nvext: dict[str, Any] | None = None  # Dynamo's extension, as on chat: routing and agent hints
    reasoning: dict[str, Any] | None = None  # `effort` becomes chat's reasoning_effort; `summary` is not made
    store: bool | None = True  # keep the response, so that a later previous_response_id continues it
    previous_response_id: str | None = None
    # Conversation objects are not kept: this would change the answer, so it is refused.
    conversation: Any = None
    background: bool | None = False
    # "auto": a conversation over the context loses its oldest turns (`responses_truncation`), not a 400
    truncation: str | None = None
    # What else the output carries (INCLUDABLE): TEXT_LOGPROBS gives each output_text its tokens' logprobs.
    include: list[str] | None = None
    top_logprobs: Any = None  # alternatives per token with TEXT_LOGPROBS; checked as OpenAI does (0..20)

    def __post_init__(self) -> None:
        if self.stream is None:
            self.stream = False
        if self.store is None:
            self.store = True
        if self.background is None:
            self.background = False

    @property
    def wants_logprobs(self) -> bool:
        """Whether the output text's token logprobs were asked for (`include`): then, and only then, the
        engine is asked for them, `top_logprobs` alternatives each."""
        return TEXT_LOGPROBS in (self.include or ())

    def to_chat(self, history: list[ChatMessage] | None = None) -> ChatCompletionRequest:
        """The equivalent chat request, after `history` (the conversation a previous_response_id
        continues); the Responses request owns this conversion."""
        if self.conversation is not None:
            raise bad_request("`conversation` is not supported: send the full input, or a previous_response_id",
                              "conversation", "unsupported_parameter")
        if self.background:
            raise bad_request("`background` is not supported", "background", "unsupported_parameter")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise bad_request("`max_output_tokens` must be at least 1", "max_output_tokens")
        if self.truncation not in (None, "auto", "disabled"):
            raise bad_request("`truncation` must be 'auto' or 'disabled'", "truncation", "invalid_value")
        _check_include(self.include)
        _check_top_logprobs(self.top_logprobs)
        # As in OpenAI's API, a previous response's instructions are not carried over: only this request's.
        messages = [ChatMessage(role="system", content=self.instructions)] if self.instructions else []
        messages += (history or []) + input_messages(self.input)
        if not messages:
            raise bad_request("`input` must not be empty", "input")
        for i, tool in enumerate(self.tools or []):
            if tool.get("type") != "function":  # a hosted tool the client expects to be run: none is here
                raise bad_request(f"tool type {tool.get('type')!r} is not served: only `function` tools",
                                  f"tools[{i}].type", "unsupported_parameter")
        tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
                 for t in self.tools or []]
        choice = self.tool_choice if tools or self.tool_choice != "auto" else None  # built-in tools only
        if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
            choice = {"type": "function", "function": {"name": choice["name"]}}
        elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":  # chat's nests mode and tools
            listed = choice.get("tools")
            listed = [{"type": t.get("type"), "function": {"name": t.get("name")}} if isinstance(t, dict) else t
                      for t in listed] if isinstance(listed, list) else listed
            choice = {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode"), "tools": listed}}
        fmt = (self.text or {}).get("format")
        response_format = None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            response_format = {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"),
                                                                      "schema": fmt.get("schema") or {}}}
        elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
            response_format = {"type": "json_object"}
        return ChatCompletionRequest(model=self.model, messages=messages, stream=self.stream,
                                     max_tokens=self.max_output_tokens, temperature=self.temperature,
                                     top_p=self.top_p, seed=self.seed, tools=tools or None, tool_choice=choice,
                                     parallel_tool_calls=self.parallel_tool_calls, response_format=response_format,
                                     reasoning_effort=(self.reasoning or {}).get("effort"), nvext=self.nvext,
                                     logprobs=True if self.wants_logprobs else None,
                                     top_logprobs=self.top_logprobs if self.wants_logprobs else None)


def _check_include(values: list[str] | None) -> None:
    """`include` as OpenAI checks it: each value one it knows."""
    for value in values or ():
        if value not in INCLUDABLE:
            supported = ", ".join(f"'{v}'" for v in INCLUDABLE[:-1]) + f", and '{INCLUDABLE[-1]}'"
            raise bad_request(f"Invalid value: '{value}'. Supported values are: {supported}.", "include",
                              "invalid_value")


def _check_top_logprobs(value: Any) -> None:
    """`top_logprobs` as OpenAI checks it: an integer in [0, 20], refused in its words otherwise."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"Invalid type for 'top_logprobs': expected an integer, but got "
                          f"{_JSON_TYPES.get(type(value), 'null')} instead.", "top_logprobs", "invalid_type")
    if value < 0:
        raise bad_request(f"Invalid 'top_logprobs': integer below minimum value. Expected a value >= 0, but got "
                          f"{value} instead.", "top_logprobs", "integer_below_min_value")
    if value > MAX_TOP_LOGPROBS:
        raise bad_request(f"Invalid 'top_logprobs': integer above maximum value. Expected a value <= "
                          f"{MAX_TOP_LOGPROBS}, but got {value} instead.", "top_logprobs", "integer_above_max_value")


def input_messages(items: str | list[dict[str, Any]]) -> list[ChatMessage]:
    if isinstance(items, str):
        return [ChatMessage(role="user", content=items)]
    out: list[ChatMessage] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            out.append(ChatMessage(role=_role(item, i),
                                   content=_text(item.get("content"), f"input[{i}].content")))
        elif kind == "function_call":
            call = {"id": _string(item, "call_id", i), "type": "function",
                    "function": {"name": _string(item, "name", i), "arguments": _string(item, "arguments", i, "{}")}}
            if out and out[-1].role == "assistant" and out[-1].tool_calls is not None:
                out[-1].tool_calls.append(call)
            else:
                out.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))
        elif kind == "function_call_output":
            out.append(ChatMessage(role="tool", content=_text(item.get("output", ""), f"input[{i}].output"),
                                   tool_call_id=_string(item, "call_id", i)))
        elif kind != "reasoning":
            raise bad_request(f"unsupported input item type {kind!r}", f"input[{i}].type")
    return out


def _role(item: dict[str, Any], i: int) -> str:
    """A message item's role (`user` when absent): one of the Responses API's, else a 400 naming it (as
    OpenAI's; never put into the prompt as a turn of its own)."""
    role = _string(item, "role", i, "user")
    if role not in MESSAGE_ROLES:
        raise not_one_of(role, MESSAGE_ROLES, f"input[{i}].role")
    return role


def _string(item: dict[str, Any], key: str, i: int, default: str | None = None) -> str:
    """An input item's string field (`default` when absent); a 400 naming it when it is anything else (the
    conversation is stored, and read back typed)."""
    value = item.get(key, default)
    if not isinstance(value, str):
        raise bad_request(f"`{key}` of an input item must be a string", f"input[{i}].{key}", "invalid_type")
    return value


def _text(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content or a function call's output (`where` names it): its text parts joined, or, with
    `input_image` parts, chat parts in order (the images as `image_url` parts: the chat path judges them and
    the model's reading of them). A refusal replayed from an earlier answer is that answer's text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("content must be a string or a list of text and image parts", where, "invalid_type")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise bad_request("content parts must be objects", where)
        kind = part.get("type")
        if kind == "input_image":
            image = {"url": part.get("image_url"), **({"detail": part["detail"]} if part.get("detail") else {})}
            parts.append({"type": "image_url", "image_url": image})
        elif kind in _TEXT_PARTS:
            text = part.get(_TEXT_PARTS[kind], "")
            if not isinstance(text, str):
                raise bad_request(f"a {kind} part's `{_TEXT_PARTS[kind]}` must be a string",
                                  f"{where}[{j}].{_TEXT_PARTS[kind]}", "invalid_type")
            parts.append({"type": "text", "text": text})
        else:
            raise bad_request(f"unsupported content part {kind!r}: text and images only (files are not read here)",
                              f"{where}[{j}].type", "unsupported_content")
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return "".join(p["text"] for p in parts)


# The text-bearing content parts, and the field their text is in.
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


decoder = msgspec.json.Decoder(ResponsesRequest)


def decode_responses(body: bytes) -> ResponsesRequest:
    return decode_body(decoder, body)

"""OpenAI HTTP schema: request models (msgspec, typed on decode) and their
conversion to the wire request's sampling/stop options (the field checks after decoding:
`validation.py`; the error body: `errors.py`).

Unknown fields are accepted and ignored (clients send vendor extensions the schema
cannot list); fields that would change the answer and that we cannot honour are
refused with a 400 rather than silently dropped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec

from dynamo.frontend import tool_guidance
from dynamo.frontend.errors import bad_request, nested_too_deeply, not_one_of
from dynamo.llm.protocol import (
    GuidedDecodingOptions, OutputOptions, PreprocessedRequest, RouterParams, SamplingOptions, StopConditions,
)


# An integer the wire can carry (msgpack: 64 bits): larger is a 400 naming the field, not a 500 at encoding.
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# The roles a chat message may have (OpenAI's, and NVIDIA Dynamo's message enum): any other is a 400 at decoding,
# never text put into the prompt as a turn of its own.
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = get_args(Role)
_MESSAGE_ROLE = re.compile(r"messages\[\d+\]\.role")


# A boolean option sent as `null` means its default, as in OpenAI's API (clients that build bodies from optional
# values send it): such fields are typed `bool | None` for the decoder and set to their default right after.
class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False

    def __post_init__(self) -> None:
        if self.include_usage is None:
            self.include_usage = False
        if self.continuous_usage_stats is None:
            self.continuous_usage_stats = False


class ChatMessage(msgspec.Struct, omit_defaults=True):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class _Common(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    stream: bool | None = False  # null: the default (`__post_init__`), as for every `bool | None = <bool>` here
    stream_options: StreamOptions | None = None
    max_tokens: I64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: I64 | None = None
    min_p: float | None = None
    n: I64 | None = None
    seed: I64 | None = None
    stop: str | list[str | I64] | None = None  # strings, and token ids (Dynamo's: integers in `stop`)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: I64 | None = None
    include_stop_str_in_output: bool | None = False  # vLLM's: the stop string that ended the answer is in it
    ignore_eos: bool | None = False
    logprobs: Any = None
    user: str | None = None
    nvext: dict[str, Any] | None = None
    cache_salt: Any = None  # vLLM's KV namespace field (nvext.cache_salt wins); checked with the routing hints
    return_tokens_as_token_ids: bool | None = False  # logprob tokens as "token_id:<id>" (Dynamo's and vLLM's option)
    # vLLM-style structured-output extras (also accepted inside `nvext`).
    guided_json: Any = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None
    # Would change the answer, and no engine here is given it: refused when set (validation.py).
    logit_bias: Any = None
    thinking_token_budget: Any = None  # vLLM's name for nvext.max_thinking_tokens (which wins)

    # Which request field holds the prompt (named in prompt errors).
    prompt_param = "prompt"
    # The boolean options whose `null` means the default: (field, default), set right after decoding.
    NULL_IS_DEFAULT: ClassVar[tuple[tuple[str, bool], ...]] = (
        ("stream", False), ("include_stop_str_in_output", False), ("ignore_eos", False),
        ("return_tokens_as_token_ids", False))

    def __post_init__(self) -> None:
        # Decoded per request: without a null this is a few identity checks (the loop costs ~0.2 us more).
        if (self.stream is None or self.include_stop_str_in_output is None or self.ignore_eos is None
                or self.return_tokens_as_token_ids is None):
            self._nulls_to_defaults()

    def _nulls_to_defaults(self) -> None:
        for name, default in self.NULL_IS_DEFAULT:
            if getattr(self, name) is None:
                setattr(self, name, default)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def thinking_budget(self) -> tuple[str, Any]:
        """(the field it came in, the reasoning budget): nvext.max_thinking_tokens, else vLLM's
        thinking_token_budget."""
        nvext = (self.nvext or {}).get("max_thinking_tokens")
        if nvext is not None or self.thinking_token_budget is None:
            return "nvext.max_thinking_tokens", nvext
        return "thinking_token_budget", self.thinking_token_budget

    def choices(self) -> int:
        return self.n or 1

    def greedy(self) -> bool:
        """`nvext.greed_sampling`: greedy decoding whatever the sampling fields say."""
        return (self.nvext or {}).get("greed_sampling") is True

    def top_logprobs_wanted(self) -> int | None:
        """None: no logprobs; k >= 0: the sampled token's logprob plus the k most likely."""
        if self.logprobs is None or self.logprobs is False:
            return None
        return 0 if self.logprobs is True else int(self.logprobs)

    def to_request(self, token_ids: list[int], request_id: str, model: str, max_tokens: int,
                   eos_token_ids: list[int], tool_json: bool = True, tool_format: str | None = None,
                   reasoning: tool_guidance.ReasoningStart | None = None) -> PreprocessedRequest:
        """The wire request for the worker; the request owns this conversion (`tool_json`, `tool_format`,
        `reasoning`: see `ChatCompletionRequest.guided_decoding`)."""
        return PreprocessedRequest(
            request_id=request_id, model=model, token_ids=token_ids,
            stop_conditions=StopConditions(max_tokens=max_tokens, stop=stop_list(self.stop) or None,
                                           stop_token_ids_hidden=stop_token_ids(self.stop) or None,
                                           min_tokens=self.min_tokens, ignore_eos=bool(self.ignore_eos),
                                           max_thinking_tokens=self.thinking_budget()[1]),
            sampling_options=SamplingOptions(
                n=None, temperature=0.0 if self.greedy() else self.temperature, top_p=self.top_p,
                top_k=1 if self.greedy() else self.top_k, min_p=self.min_p,
                seed=self.seed, presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                repetition_penalty=self.repetition_penalty,
                guided_decoding=self.guided_decoding(tool_json, tool_format, reasoning)),
            output_options=OutputOptions(logprobs=self.top_logprobs_wanted()),
            eos_token_ids=eos_token_ids,
            router=self.router_params(),
        )

    def router_params(self) -> RouterParams | None:
        """`nvext.router` (SLA targets in ms, checked by `validation.check_router_params`)."""
        given = (self.nvext or {}).get("router")
        return RouterParams(**given) if given else None

    def guided_decoding(self, tool_json: bool = True, tool_format: str | None = None,
                        reasoning: tool_guidance.ReasoningStart | None = None) -> GuidedDecodingOptions | None:
        """The structured-output constraint for the engine, from the guided_* extras."""
        ext = self.nvext or {}
        get = lambda name: getattr(self, name) if getattr(self, name) is not None else ext.get(name)  # noqa: E731
        options = GuidedDecodingOptions(json=get("guided_json"), regex=get("guided_regex"),
                                        choice=get("guided_choice"), grammar=get("guided_grammar"),
                                        backend=get("guided_decoding_backend"))
        return options if (options.json is not None or options.regex or options.choice or options.grammar) else None


class ChatCompletionRequest(_Common, kw_only=True, omit_defaults=True):
    messages: list[ChatMessage]
    max_completion_tokens: I64 | None = None
    top_logprobs: I64 | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    chat_template_args: dict[str, Any] | None = None  # Dynamo's name for them (chat_template_kwargs wins)
    reasoning_effort: str | None = None  # a template variable (gpt-oss's sets its reasoning level)
    # vLLM's assistant prefill: without the generation prompt the rendered chat ends with the last message;
    # continuing the final message also cuts its end-of-turn, so the answer carries on from its text.
    add_generation_prompt: bool | None = True
    continue_final_message: bool | None = False
    # Not served, refused when set: legacy function calling (use `tools`), audio out, web search.
    functions: Any = None
    function_call: Any = None
    modalities: Any = None
    audio: Any = None
    web_search_options: Any = None

    prompt_param = "messages"
    NULL_IS_DEFAULT = _Common.NULL_IS_DEFAULT + (("add_generation_prompt", True), ("continue_final_message", False))

    def __post_init__(self) -> None:  # _Common's checks written out: the chat decode is the hottest
        if (self.stream is None or self.include_stop_str_in_output is None or self.ignore_eos is None
                or self.return_tokens_as_token_ids is None or self.add_generation_prompt is None
                or self.continue_final_message is None):
            self._nulls_to_defaults()

    def template_kwargs(self) -> dict[str, Any] | None:
        """The template's extra variables, as vLLM sets them: `chat_template_kwargs`, `reasoning_effort`
        over them, and `enable_thinking` (effort other than "none") unless they set that."""
        kwargs = self.chat_template_kwargs if self.chat_template_kwargs is not None else self.chat_template_args
        if self.reasoning_effort is None:
            return kwargs
        return {"enable_thinking": self.reasoning_effort != "none", **(kwargs or {}),
                "reasoning_effort": self.reasoning_effort}

    def generation_prompt(self) -> bool:
        """Whether the rendered chat opens the assistant's turn: `add_generation_prompt`, which
        `chat_template_kwargs` overrides (as vLLM merges them)."""
        return bool((self.template_kwargs() or {}).get("add_generation_prompt", self.add_generation_prompt))

    def guided_decoding(self, tool_json: bool = True, tool_format: str | None = None,
                        reasoning: tool_guidance.ReasoningStart | None = None) -> GuidedDecodingOptions | None:
        """`tool_json`: tool_choice required / named asks for the calls as JSON (`forced_tool_json`);
        `tool_format`: the model's tool-call parser; `reasoning`: its reasoning parser, where it has one. A
        response_format constrains the final answer only (OpenAI's rule): never a turn that must call a tool,
        and with tool_choice auto only in a constraint that also admits the calls, after the reasoning
        (`tool_guidance`)."""
        mode = self.tool_choice_mode()
        explicit = super().guided_decoding(tool_json)  # the guided_* extras: the client's own constraint
        if mode in ("required", "named"):
            return explicit or (self._tool_guidance() if tool_json else None)
        answer = self._answer_schema()
        if answer is None:
            return explicit
        if mode == "auto":
            functions = [t["function"] for t in self.tools or []]
            parallel = self.parallel_tool_calls is not False
            tag = tool_guidance.answer_or_calls(functions, answer, tool_format, parallel, reasoning)
            return GuidedDecodingOptions(structural_tag=tag) if tag is not None else None
        if (self.response_format or {}).get("type") == "json_object":
            return GuidedDecodingOptions(json_object=True)
        return GuidedDecodingOptions(json=answer)

    def _answer_schema(self) -> dict | None:
        """The JSON schema response_format holds the answer to (any object for json_object), or None."""
        fmt = self.response_format or {}
        if fmt.get("type") == "json_object":
            return dict(tool_guidance.ANY_OBJECT)
        if fmt.get("type") == "json_schema":
            return (fmt.get("json_schema") or {}).get("schema") or dict(tool_guidance.ANY_OBJECT)
        return None

    def _tool_guidance(self) -> GuidedDecodingOptions:
        """`required` / a named function is enforced the way vLLM and NVIDIA Dynamo do: the engine must emit the
        arguments (named) or a JSON list of `{"name", "parameters"}` calls (required), which the output stage
        reads (NamedArguments, JsonListParser)."""
        functions = [t["function"] for t in self.tools or []]
        if self.tool_choice_mode() == "named":
            fn = next(f for f in functions if f["name"] == self.named_tool())
            return GuidedDecodingOptions(json=tool_guidance.named_schema(fn))
        parallel = self.parallel_tool_calls is not False
        return GuidedDecodingOptions(json=tool_guidance.required_schema(functions, parallel))

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def message_dicts(self) -> list[dict]:
        return [message_dict(m) for m in self.messages]

    def template_tools(self) -> list[dict] | None:
        """Tools the chat template sees: none when the client forbids calling them."""
        return None if self.tool_choice == "none" else self.tools

    def tool_choice_mode(self) -> str:
        """"none" | "auto" | "required" | "named" (named: `named_tool()` is the function)."""
        if not self.tools or self.tool_choice == "none":
            return "none"
        if isinstance(self.tool_choice, dict):
            return "named"
        return self.tool_choice or "auto"

    def named_tool(self) -> str | None:
        if isinstance(self.tool_choice, dict):
            return (self.tool_choice.get("function") or {}).get("name")
        return None


class CompletionRequest(_Common, kw_only=True, omit_defaults=True):
    # str | list[str] | list[int] | list[list[int]]; msgspec cannot type that union, checked below.
    prompt: str | list[Any]
    echo: bool | None = False
    best_of: I64 | None = None
    suffix: str | None = None

    NULL_IS_DEFAULT = _Common.NULL_IS_DEFAULT + (("echo", False),)

    def __post_init__(self) -> None:
        if self.echo is None:
            self._nulls_to_defaults()
        else:
            super().__post_init__()

    def prompt_input(self) -> str | list:
        return self.prompt


chat_decoder = msgspec.json.Decoder(ChatCompletionRequest)
completion_decoder = msgspec.json.Decoder(CompletionRequest)


def decode_request(body: bytes, kind: Literal["chat", "completion"]):
    """Parse and type-check a request body; errors name the offending field."""
    return decode_body(chat_decoder if kind == "chat" else completion_decoder, body)


def decode_body(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """Parse and type-check a body with `decoder`; a 400 naming the offending field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        # The path is the last "at `$." (a value quoted before it may hold that text too).
        what, _, where = text.rpartition(" - at `$.")
        param = where.removesuffix("`") if what else None
        if param is not None and what.startswith("Invalid enum value '") and _MESSAGE_ROLE.fullmatch(param):
            raise not_one_of(what[len("Invalid enum value '"):-1], ROLES, param) from None
        if param is None and "missing required field" in text:
            param = text.split("`")[1] if "`" in text else None
        # a bound or a value outside the field's set (a message's role), else a type
        code = "invalid_value" if " <= " in text or " >= " in text or "Invalid enum value" in text else "invalid_type"
        raise bad_request(f"Invalid request: {text}", param, code) from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"Malformed JSON body: {exc}", None, "invalid_json") from None
    except RecursionError:
        raise nested_too_deeply() from None


def stop_list(stop: str | list[str | int] | None) -> list[str]:
    """The stop strings (the frontend matches them in the text)."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]


def stop_token_ids(stop: str | list[str | int] | None) -> list[int]:
    """The stop token ids given as integers in `stop` (the engine stops on them, and hides them)."""
    if stop is None or isinstance(stop, str):
        return []
    return [s for s in stop if isinstance(s, int) and not isinstance(s, bool)]


def message_dict(message: ChatMessage) -> dict:
    out: dict[str, Any] = {"role": message.role, "content": message.content if message.content is not None else ""}
    for field in ("name", "tool_calls", "tool_call_id", "reasoning_content"):
        value = getattr(message, field)
        if value is not None:
            out[field] = value
    if message.tool_calls:
        # HF templates expect arguments as an object (they tojson it); OpenAI sends a JSON string.
        out["tool_calls"] = [_template_call(c) for c in message.tool_calls]
    return out


def _template_call(call: dict) -> dict:
    if not isinstance(call.get("function"), dict):
        return call  # malformed history: the template decides (and may refuse with a 400)
    fn = dict(call["function"])
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = msgspec.json.decode(args) if args.strip() else {}
        except msgspec.DecodeError:
            pass  # leave it as sent: the template renders the string
    return {**call, "function": fn}

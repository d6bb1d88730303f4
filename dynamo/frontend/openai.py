"""OpenAI HTTP schema: request models (msgspec, validated on decode), their
conversion to the wire request's sampling/stop options, and the error body.

Unknown fields are accepted (clients send vendor extensions) and listed as ignored
in the debug log; fields that would change the answer and that we cannot honour
are refused with a 400 rather than silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from dynamo.llm.protocol import OutputOptions, SamplingOptions, StopConditions


class ApiError(Exception):
    """An error with an OpenAI-shaped body and an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ChatMessage(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class _Common(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    n: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool = False
    logprobs: Any = None
    user: str | None = None
    nvext: dict[str, Any] | None = None


class ChatCompletionRequest(_Common, kw_only=True, omit_defaults=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Common, kw_only=True, omit_defaults=True):
    # str | list[str] | list[int] | list[list[int]]; msgspec cannot type that union, checked below.
    prompt: str | list[Any]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


chat_decoder = msgspec.json.Decoder(ChatCompletionRequest)
completion_decoder = msgspec.json.Decoder(CompletionRequest)


def decode_request(body: bytes, kind: Literal["chat", "completion"]):
    """Parse and type-check a request body; errors name the offending field."""
    decoder = chat_decoder if kind == "chat" else completion_decoder
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.split("at `$.", 1)[1].rstrip("`") if "at `$." in text else None
        if param is None and "missing required field" in text:
            param = text.split("`")[1] if "`" in text else None
        raise bad_request(f"Invalid request: {text}", param, "invalid_type") from None
    except msgspec.DecodeError as exc:
        raise bad_request(f"Malformed JSON body: {exc}", None, "invalid_json") from None


def _check_range(value: float | int | None, name: str, low: float, high: float, low_open: bool = False) -> None:
    if value is None:
        return
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad_request(f"`{name}` must be in {bracket}{low}, {high}], got {value}", name)


def validate_common(req: _Common) -> None:
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
    if req.n is not None and req.n != 1:
        raise bad_request("`n` other than 1 is not supported: send separate requests", "n", "unsupported_value")
    if req.min_tokens is not None and req.min_tokens < 0:
        raise bad_request("`min_tokens` must be >= 0", "min_tokens")
    if req.logprobs not in (None, False, 0):
        raise bad_request("`logprobs` is not supported by this server", "logprobs", "unsupported_parameter")
    stops = stop_list(req.stop)
    if len(stops) > 16:
        raise bad_request("at most 16 stop sequences are supported", "stop")
    if any(not s for s in stops):
        raise bad_request("stop sequences must be non-empty strings", "stop")


def validate_chat(req: ChatCompletionRequest) -> None:
    validate_common(req)
    if not req.messages:
        raise bad_request("`messages` must contain at least one message", "messages")
    if req.max_completion_tokens is not None and req.max_completion_tokens < 1:
        raise bad_request("`max_completion_tokens` must be at least 1", "max_completion_tokens")
    if req.tools and req.tool_choice not in (None, "none"):
        # Tool-call parsing is not implemented: refusing beats returning unparsed calls.
        raise bad_request("tool calling is not supported by this server", "tools", "unsupported_parameter")


def validate_completion(req: CompletionRequest) -> None:
    validate_common(req)
    if req.echo:
        raise bad_request("`echo` is not supported", "echo", "unsupported_parameter")
    if req.best_of not in (None, 1):
        raise bad_request("`best_of` other than 1 is not supported", "best_of", "unsupported_value")
    if req.suffix:
        raise bad_request("`suffix` is not supported", "suffix", "unsupported_parameter")
    prompt = req.prompt
    if isinstance(prompt, list):
        if not prompt:
            raise bad_request("`prompt` must not be empty", "prompt")
        if not _is_prompt_list(prompt):
            raise bad_request("`prompt` must be a string, a list of strings, a list of token ids or a list of "
                              "token-id lists", "prompt", "invalid_type")
        if isinstance(prompt[0], (str, list)) and len(prompt) != 1:
            raise bad_request("batched prompts are not supported: send one prompt per request", "prompt",
                              "unsupported_value")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prompt_list(prompt: list[Any]) -> bool:
    if all(isinstance(p, str) for p in prompt) or all(_is_int(p) for p in prompt):
        return True
    return all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt)


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def sampling_of(req: _Common) -> SamplingOptions:
    return SamplingOptions(
        n=None, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, min_p=req.min_p, seed=req.seed,
        presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
    )


def stop_conditions_of(req: _Common, max_tokens: int | None) -> StopConditions:
    stops = stop_list(req.stop)
    return StopConditions(max_tokens=max_tokens, stop=stops or None, min_tokens=req.min_tokens,
                          ignore_eos=bool(req.ignore_eos))


def output_options_of(req: _Common) -> OutputOptions:
    return OutputOptions()

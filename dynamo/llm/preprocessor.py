"""Preprocessing (frontend side, per model): chat template + tokenization, prompt
length checks against the context, and the wire request for the worker.
Post-processing of the stream (detokenize, stop strings) is `TextAssembler`."""

from __future__ import annotations

import uuid

from dynamo.frontend.openai import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    bad_request,
    output_options_of,
    sampling_of,
    stop_conditions_of,
)
from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError
from dynamo.llm.detokenizer import IncrementalDetokenizer
from dynamo.llm.model_card import ModelDeploymentCard, card_model_dir
from dynamo.llm.protocol import PreprocessedRequest
from dynamo.llm.stop import StopMatcher
from dynamo.llm.tokenizer import Tokenizer


class ModelPipeline:
    """Everything the frontend needs to turn OpenAI requests for one model into
    token ids and back. Built once per model from its card's files."""

    def __init__(self, card: ModelDeploymentCard) -> None:
        model_dir = card_model_dir(card)
        self.name = card.display_name
        self.card = card
        self.tokenizer = Tokenizer.from_dir(model_dir)
        try:
            self.template: ChatTemplate | None = ChatTemplate.from_dir(model_dir)
        except Exception:
            self.template = None  # completions-only model
        self.context_length = card.context_length
        self.eos_token_ids = list(self.tokenizer.eos_token_ids)

    # -- prompts ---------------------------------------------------------------------------
    def chat_prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        if self.template is None:
            raise ApiError(400, f"model {self.name!r} has no chat template; use /v1/completions",
                           "invalid_request_error", "messages", "no_chat_template")
        messages = [msgspec_to_dict(m) for m in req.messages]
        try:
            extra = {k: v for k, v in (req.chat_template_kwargs or {}).items()
                     if k not in ("messages", "tools", "add_generation_prompt")}
            text = self.template.render(messages, add_generation_prompt=True, tools=req.tools, **extra)
        except ChatTemplateError as exc:
            raise bad_request(f"chat template failed: {exc}", "messages", "invalid_messages") from None
        return self.tokenizer.encode(text, add_special_tokens=False)

    def completion_prompt_ids(self, req: CompletionRequest) -> list[int]:
        prompt = req.prompt
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        if prompt and isinstance(prompt[0], str):
            return self.tokenizer.encode(prompt[0], add_special_tokens=False)  # type: ignore[arg-type]
        ids = prompt[0] if prompt and isinstance(prompt[0], list) else prompt
        vocab = self.tokenizer.vocab_size
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in ids):  # type: ignore[union-attr]
            raise bad_request(f"token ids in `prompt` must be in [0, {vocab})", "prompt")
        return list(ids)  # type: ignore[arg-type]

    # -- the wire request ----------------------------------------------------------------------
    def build_request(self, req: ChatCompletionRequest | CompletionRequest, token_ids: list[int],
                      request_id: str | None = None) -> PreprocessedRequest:
        prompt_len = len(token_ids)
        if prompt_len == 0:
            raise bad_request("the prompt is empty after tokenization", "prompt" if
                              isinstance(req, CompletionRequest) else "messages")
        if prompt_len >= self.context_length:
            raise bad_request(
                f"This model's maximum context length is {self.context_length} tokens. However, your prompt is "
                f"{prompt_len} tokens long, leaving no room for output.",
                "messages" if isinstance(req, ChatCompletionRequest) else "prompt", "context_length_exceeded")
        max_tokens = req.max_tokens
        if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
            max_tokens = req.max_completion_tokens
        room = self.context_length - prompt_len
        if max_tokens is None:
            max_tokens = room  # fill the context, as vLLM and Dynamo do
        elif max_tokens > room:
            raise bad_request(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the completion).",
                "max_tokens", "context_length_exceeded")
        return PreprocessedRequest(
            request_id=request_id or uuid.uuid4().hex,
            model=self.name,
            token_ids=token_ids,
            stop_conditions=stop_conditions_of(req, max_tokens),
            sampling_options=sampling_of(req),
            output_options=output_options_of(req),
            eos_token_ids=self.eos_token_ids,
            lora_name=self.card.lora_name,
        )

    def assembler(self, stops: list[str] | None) -> "TextAssembler":
        return TextAssembler(self.tokenizer, stops or [])


def msgspec_to_dict(message) -> dict:
    out = {"role": message.role, "content": message.content if message.content is not None else ""}
    for field in ("name", "tool_calls", "tool_call_id", "reasoning_content"):
        value = getattr(message, field)
        if value is not None:
            out[field] = value
    return out


class TextAssembler:
    """Turns streamed token ids into visible text: incremental detokenization that
    never splits a UTF-8 character, with stop strings matched and hidden."""

    __slots__ = ("detok", "stop", "stopped", "completion_tokens")

    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stop = StopMatcher(stops) if stops else None
        self.stopped = False
        self.completion_tokens = 0

    def add(self, token_ids: list[int]) -> str:
        self.completion_tokens += len(token_ids)
        text = self.detok.add(token_ids)
        if self.stop is None or not text:
            return text
        visible, hit = self.stop.feed(text)
        if hit:
            self.stopped = True
        return visible

    def finish(self) -> str:
        if self.stopped:
            return ""
        tail = self.detok.flush()
        if self.stop is None:
            return tail
        visible, hit = self.stop.feed(tail) if tail else ("", False)
        if hit:
            self.stopped = True
            return visible
        return visible + self.stop.flush()

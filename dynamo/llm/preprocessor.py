"""Preprocessing (frontend side, per model): chat template + tokenization and the
prompt-length budget against the model's context. It knows nothing of HTTP or of the
OpenAI schema: the OpenAI request models convert themselves to the wire request
(`dynamo.frontend.openai`), and failures here are `PreprocessError`s that the frontend
maps to 400s. Post-processing of the stream (detokenize, stop strings) is `TextAssembler`;
the frontend's output stage (`dynamo.frontend.output`) stacks the parsers on top of it.

Prompt building is synchronous and may take long on a big input; the frontend runs it off
the event loop for big bodies. A prompt that cannot fit the model's context is refused from
a length bound (`PromptBound`) before templating and again before tokenization, and a
tokenized prompt over the context never becomes a Python list. A prompt to generate from needs
room for one output token (at most context - 1 tokens); a pooling input (embeddings,
classification, a cross-encoder's pair) may fill the whole context, as vLLM's pooling runner takes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from dynamo.llm.card_files import chat_template_file
from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError, with_thinking_default
from dynamo.llm.detokenizer import IncrementalDetokenizer
from dynamo.llm.media import image_token_of
from dynamo.llm.model_card import ModelDeploymentCard, card_model_dir, read_json
from dynamo.llm.prompt_bound import PromptBound
from dynamo.llm.rerank_pairs import PairFormat, PairTokens, pair_tokens
from dynamo.llm.stop import StopMatcher
from dynamo.llm.token_cache import SegmentedEncoder, TokenCache
from dynamo.llm.tokenizer import EncodeCost, Tokenizer


@dataclass(frozen=True)
class ContextOverflow:
    """Why a prompt does not fit the context, as numbers: each API writes its own message from
    them (Anthropic's clients parse theirs to shrink `max_tokens` or compact the conversation)."""

    prompt_tokens: int  # a lower bound when counted from the text's length
    context_length: int
    max_tokens: int | None = None  # the output asked for, when the prompt fits but not with it


class PreprocessError(ValueError):
    """The request cannot be turned into a prompt for this model (a client error)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value",
                 overflow: ContextOverflow | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.overflow = overflow


class ModelPipeline:
    """Everything the frontend needs to turn requests for one model into token ids
    and back. Built once per model from its card's files."""

    def __init__(self, card: ModelDeploymentCard, token_cache: TokenCache | None = None,
                 template_text: str | None = None) -> None:
        """`template_text` replaces the card's chat template (the frontend's `--chat-template`)."""
        model_dir = card_model_dir(card)
        self.name = card.display_name
        self.card = card
        # The owner's timing hook, (what, seconds) for "template" and "tokenize" (the frontend's stage
        # metrics); called from whichever thread did the work.
        self.observe: Callable[[str, float], None] | None = None
        self.tokenizer = Tokenizer.from_dir(model_dir)
        try:
            self.template: ChatTemplate | None = ChatTemplate.from_dir(model_dir, chat_template_file(card, model_dir),
                                                                       template_text)
        except Exception:
            self.template = None  # completions-only model
        self.context_length = card.context_length
        self.eos_token_ids = list(self.tokenizer.eos_token_ids)
        config = read_json(model_dir / "config.json")
        self.image_token_id = image_token_of(config)  # where a prompt's images start
        # A classification model's class names, by index (`/v1/classify` labels): its config's id2label.
        self.labels = {int(k): v for k, v in (config.get("id2label") or {}).items() if str(k).isdigit()}
        self.bound = PromptBound.from_backend(self.tokenizer.backend)
        self.encoder = self.tokenizer if token_cache is None else SegmentedEncoder(self.tokenizer, token_cache,
                                                                                   self._probe())

    def _probe(self) -> str | None:
        """A rendered conversation with spaces and newlines at its turns' edges: what the segmented
        encoder must tokenize exactly as the whole string is."""
        if self.template is None:
            return None
        turns = [("system", " You are a helpful assistant.\n\n" * 20), ("user", "Hello there,  how are you?\n" * 20),
                 ("assistant", "\n Fine, thanks. " * 20), ("user", "ok ")]
        try:
            return self.template.render([{"role": r, "content": c} for r, c in turns], add_generation_prompt=True)
        except Exception:
            return None

    # -- prompts ---------------------------------------------------------------------------
    def max_prompt_tokens(self, pooling: bool = False) -> int:
        """The longest prompt this model takes: the whole context for pooling, one less to generate."""
        return self.context_length if pooling else self.context_length - 1

    def _check_bound(self, n_chars: int, param: str, pooling: bool = False) -> None:
        """Refuse from the text's length alone when it surely needs more tokens than fit."""
        at_least = self.bound.min_tokens(n_chars)
        if at_least > self.max_prompt_tokens(pooling):
            raise PreprocessError(
                f"This model's maximum context length is {self.context_length} tokens. However, your prompt is "
                f"at least {at_least} tokens long ({n_chars} characters){_NO_ROOM[pooling]}.",
                param, "context_length_exceeded", ContextOverflow(at_least, self.context_length))

    def encode_prompt(self, text: str, param: str, pooling: bool = False) -> list[int]:
        """`text`'s token ids; PreprocessError naming `param` when they do not fit the context."""
        started = time.perf_counter()
        count, ids = self.encoder.encode_capped(text, self.max_prompt_tokens(pooling) + 1)
        if self.observe is not None:
            self.observe("tokenize", time.perf_counter() - started)
        if ids is None:
            raise _too_long(self.context_length, count, param, pooling)
        return ids

    def encode_cost(self, text: str) -> EncodeCost:
        """What tokenizing `text` would cost now (much of it may be cached): known before paying it."""
        return self.encoder.encode_cost(text)

    def when_tokenized(self, key: tuple[int, str], callback: Callable[[], None]) -> bool:
        """`callback` once a piece of `encode_cost().pending` is tokenized (False: it already is)."""
        return self.encoder.when_released(key, callback)

    def chat_prompt_ids(self, messages: list[dict], tools: list | None = None,
                        template_kwargs: dict[str, Any] | None = None, generation_prompt: bool = True) -> list[int]:
        """The chat's prompt; without `generation_prompt`, the prefix a next turn after the last
        message starts with (speculative prefill)."""
        return self.encode_prompt(self.chat_prompt_text(messages, tools, template_kwargs, generation_prompt),
                                  "messages")

    def chat_prompt_text(self, messages: list[dict], tools: list | None = None,
                         template_kwargs: dict[str, Any] | None = None, generation_prompt: bool = True,
                         continue_final: bool = False) -> str:
        """The chat rendered through the model's template (checked against the context by its length);
        `continue_final`: cut after the final message's text (its end-of-turn dropped), as Hugging Face's
        `continue_final_message` does, so that the answer carries on from it."""
        if self.template is None:
            raise PreprocessError(f"model {self.name!r} has no chat template; use /v1/completions", "messages",
                                  "no_chat_template")
        # Every chat template renders the user turns, so their text alone bounds the prompt.
        self._check_bound(sum(_text_chars(m.get("content")) for m in messages if m.get("role") == "user"),
                          "messages")
        try:
            kwargs = with_thinking_default(template_kwargs, self.card.default_thinking_mode)
            extra = {k: v for k, v in (kwargs or {}).items() if k not in ("messages", "tools", "add_generation_prompt")}
            started = time.perf_counter()
            text = self.template.render(messages, add_generation_prompt=generation_prompt, tools=tools, **extra)
            if self.observe is not None:
                self.observe("template", time.perf_counter() - started)
        except ChatTemplateError as exc:
            raise PreprocessError(f"chat template failed: {exc}", "messages", "invalid_messages") from None
        if continue_final:
            text = _cut_after_final(text, messages[-1].get("content"))
        self._check_bound(len(text), "messages")
        return text

    def completion_prompt_ids(self, prompt: str | list, param: str = "prompt", pooling: bool = False) -> list[int]:
        """A text or token-id prompt's ids; `pooling`: an input that may fill the whole context."""
        if prompt and isinstance(prompt, list) and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            self._check_bound(len(prompt), param, pooling)
            return self.encode_prompt(prompt, param, pooling)
        ids = prompt[0] if prompt and isinstance(prompt[0], list) else prompt
        if len(ids) > self.max_prompt_tokens(pooling):
            raise _too_long(self.context_length, len(ids), param, pooling)
        vocab = self.tokenizer.vocab_size
        # One C-level pass per check instead of a Python loop per token (long prompts).
        if ids and (not all(issubclass(t, int) for t in set(map(type, ids))) or min(ids) < 0 or max(ids) >= vocab):
            raise PreprocessError(f"token ids in `{param}` must be in [0, {vocab})", param)
        return list(ids)

    def pooling_prompt_ids(self, prompt: str | list[int], param: str) -> list[int]:
        """One pooling input's ids (embeddings, classification): up to the whole context, never empty."""
        ids = self.completion_prompt_ids(prompt, param, pooling=True)
        if not ids:
            raise PreprocessError("the prompt is empty after tokenization", param)
        return ids

    # -- the budget ------------------------------------------------------------------------
    def pair_prompts(self, pairs: list[tuple[str, str]], fmt: PairFormat, params: list[str]) -> list[PairTokens]:
        """Each (query, document) pair's prompt for a cross-encoder (`rerank_pairs`); PreprocessError naming
        the pair's `params[i]` when it cannot fit the context (first by its length, before tokenizing). A
        pair is pooled: it may fill the whole context."""
        for (query, document), param in zip(pairs, params):
            self._check_bound(len(query) + len(document), param, pooling=True)
        prompts = pair_tokens(self.tokenizer, pairs, fmt)
        for prompt, param in zip(prompts, params):
            if len(prompt.ids) > self.context_length:
                raise _too_long(self.context_length, len(prompt.ids), param, pooling=True)
        return prompts

    def max_tokens_for(self, token_ids: list[int], requested: int | None, param: str) -> int:
        """Output tokens this prompt may generate: `requested`, or the rest of the context
        when None (as vLLM and Dynamo do). `param` names the prompt field in errors."""
        prompt_len = len(token_ids)
        if prompt_len == 0:
            raise PreprocessError("the prompt is empty after tokenization", param)
        if prompt_len >= self.context_length:
            raise _too_long(self.context_length, prompt_len, param)
        room = self.context_length - prompt_len
        if requested is None:
            return room
        if requested > room:
            raise PreprocessError(
                f"This model's maximum context length is {self.context_length} tokens. However, you requested "
                f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the completion).",
                "max_tokens", "context_length_exceeded", ContextOverflow(prompt_len, self.context_length, requested))
        return requested

    def assembler(self, stops: list[str] | None, skip_special_tokens: bool = True,
                  include_stop: bool = False) -> "TextAssembler":
        return TextAssembler(self.tokenizer, stops or [], skip_special_tokens, include_stop)


# How a refusal ends: a prompt to generate from must leave room for output; a pooling input need not.
_NO_ROOM = {False: ", leaving no room for output", True: ""}


def _too_long(context_length: int, prompt_len: int, param: str, pooling: bool = False) -> PreprocessError:
    return PreprocessError(
        f"This model's maximum context length is {context_length} tokens. However, your prompt is "
        f"{prompt_len} tokens long{_NO_ROOM[pooling]}.", param, "context_length_exceeded",
        ContextOverflow(prompt_len, context_length))


def _text_chars(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content
                   if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return 0


class TextAssembler:
    """Turns streamed token ids into visible text: incremental detokenization that
    never splits a UTF-8 character, with stop strings matched and hidden."""

    __slots__ = ("detok", "stop", "stopped", "completion_tokens")

    def __init__(self, tokenizer: Tokenizer, stops: list[str], skip_special_tokens: bool = True,
                 include_stop: bool = False) -> None:
        self.detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
        self.stop = StopMatcher(stops, include_stop) if stops else None
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


def final_message_text(content: Any) -> str:
    """The text a continued final message ends with: its string, or its last text part's."""
    if isinstance(content, str):
        return content
    for part in reversed(content or []):
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            return part["text"]
    return ""


def _cut_after_final(rendered: str, content: Any) -> str:
    final = final_message_text(content).strip()  # templates may trim a message's ends
    at = rendered.rfind(final) if final else -1
    if at < 0:
        raise PreprocessError("`continue_final_message`: the chat template does not render the final message's "
                              "text as given, so it cannot be continued", "continue_final_message")
    return rendered[:at + len(final)]

"""A completion of several prompts (`prompt` a list of strings or of token-id lists, as OpenAI and NVIDIA Dynamo
serve it): each prompt prepared as a request of its own (its tokens, its context check, its `n` wire requests, each
routed on its own tokens), and run as one generation whose choices are every prompt's, prompt `i`'s choice `j` at
index `i * n + j`. The choices already fan in by that flat index (`fan_in.py`), so a batch is one `GenerationRun`
whose echo, usage and cached tokens are counted per prompt (`BatchedCompletionRun`); a single prompt never comes
here (`is_batched`)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import msgspec

from dynamo.frontend import annotations
from dynamo.frontend.choices import Choice
from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.preparation import TOKEN_DATA, wire_requests
from dynamo.llm.protocol import RoutingHints


def is_batched(req) -> bool:
    """Whether a completion's `prompt` is several prompts (a one-element list is the prompt it holds)."""
    prompt = req.prompt
    return type(prompt) is list and len(prompt) > 1 and isinstance(prompt[0], (str, list))


@dataclass
class PromptBatch:
    """A batch as prepared: each prompt's token ids, and the wire requests of all their choices, prompt by prompt
    (prompt `i`'s choice `j` at `i * n + j`)."""

    ids: list[list[int]]
    preqs: list
    n: int

    def prompt_of(self, index: int) -> int:
        """The prompt a choice (by its flat index) answers."""
        return index // self.n

    def echoes(self, req, decode) -> list[str]:
        """Each prompt's `echo` text ([] without `echo`): as the client sent it, or its token ids decoded."""
        if not req.echo:
            return []
        return [p if isinstance(p, str) else decode(ids, skip_special_tokens=False)
                for p, ids in zip(req.prompt, self.ids)]


Tokenize = Callable[[Any, int], Awaitable[tuple[list[int], bytes]]]


async def prepare(pipeline, req, hints: RoutingHints | None, tokenize: Tokenize, request_id: str | None,
                  trace_id: str | None) -> PromptBatch:
    """Every prompt tokenized by `tokenize(request, size)` (`request_path.tokenized_prompt`: concurrently, a long one
    on the prep pool) and checked as a single prompt would be (the 400 names the prompt), then its `n` wire requests,
    all under one response id: choice `k`'s wire id is `cmpl-<id>-k`, so each prompt's requests are its own and the
    run's id is the one they share."""
    _refuse_unbatchable(req)
    subs = [msgspec.structs.replace(req, prompt=p) for p in req.prompt]
    ids = await _tokenized(subs, tokenize)
    rid = request_id or uuid.uuid4().hex
    preqs: list = []
    for i, (sub, prompt_ids) in enumerate(zip(subs, ids)):
        try:
            preqs += wire_requests(pipeline, sub, prompt_ids, False, hints, rid, trace_id)
        except ApiError as exc:
            raise _of_prompt(exc, i) from None
    for k, preq in enumerate(preqs):
        preq.request_id = f"cmpl-{rid}-{k}"
    return PromptBatch(ids, preqs, req.choices())


def _refuse_unbatchable(req) -> None:
    """What names one prompt's tokens or routing cannot stand for several: refused, never applied to one."""
    if (req.nvext or {}).get("token_data") is not None:
        raise bad_request(f"{TOKEN_DATA} cannot be given with batched prompts", TOKEN_DATA, "unsupported_value")
    if annotations.QUERY_INSTANCE_ID in annotations.requested(req.nvext):
        raise bad_request(f"the {annotations.QUERY_INSTANCE_ID} annotation cannot be given with batched prompts",
                          "nvext.annotations", "unsupported_value")


async def _tokenized(subs: list, tokenize: Tokenize) -> list[list[int]]:
    """Each prompt's token ids; the first prompt (by index) that fails is the 400, naming it."""
    # The batch's text as a whole decides, as a body's size does: a batch too big to tokenize inline on the event loop
    # goes to the prep pool, a prompt per job, in parallel (token ids are never tokenized).
    size = sum(len(sub.prompt) for sub in subs if isinstance(sub.prompt, str))
    results = await asyncio.gather(*(tokenize(sub, size) for sub in subs), return_exceptions=True)
    for i, result in enumerate(results):
        if isinstance(result, ApiError):
            raise _of_prompt(result, i) from None
        if isinstance(result, BaseException):
            raise result
    return [ids for ids, _ in results]


def _of_prompt(exc: ApiError, index: int) -> ApiError:
    """A prompt's 400, saying which prompt of the batch it is about (the field it names is unchanged)."""
    error = bad_request(f"prompt[{index}]: {exc.message}", exc.param, exc.code or "invalid_value")
    error.status, error.type, error.overflow = exc.status, exc.type, exc.overflow
    return error


class BatchedCompletionRun(GenerationRun):
    """The generation of a batch: the run of its flat choices, with each choice echoing its own prompt, and usage
    (prompt and cached tokens) summed over the prompts, each counted once whatever its `n`."""

    def __init__(self, *args: Any, batch: PromptBatch, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.batch = batch
        self.echo = ""  # the base's, of one prompt: each choice's own is `echoes`
        self.echoes = batch.echoes(self.req, self.pipeline.tokenizer.decode)
        self._cached = [0] * len(batch.ids)

    def _echo_of(self, choice: Choice) -> str:
        return self.echoes[self.batch.prompt_of(choice.index)] if self.echoes else ""

    def _chunk_bytes(self, choice: Choice, d: ChoiceDelta) -> bytes:
        if self.echoes and not choice.started:  # its prompt before its first text (the base's `echo` is "")
            choice.started = True
            d.content = self._echo_of(choice) + d.content
        return super()._chunk_bytes(choice, d)

    def _completion_fields(self, choice: Choice, logprobs: dict | None) -> dict:
        fields = super()._completion_fields(choice, logprobs)
        fields["text"] = self._echo_of(choice) + fields["text"]
        return fields

    def _absorb(self, choice: Choice, outputs) -> ChoiceDelta:
        d = super()._absorb(choice, outputs)
        p = self.batch.prompt_of(choice.index)
        for out in outputs:  # each prompt's cache hit, counted once however many of its choices report it
            if out.cached_tokens is not None:
                self._cached[p] = max(self._cached[p], out.cached_tokens)
        self.cached_tokens = sum(self._cached)
        return d

    @property
    def prompt_tokens(self) -> int:
        """Every prompt's length, each once (not once per choice)."""
        return sum(len(ids) for ids in self.batch.ids)

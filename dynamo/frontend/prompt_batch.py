"""A completion of several prompts (`prompt` a list of strings or of token-id lists, as OpenAI and NVIDIA Dynamo
serve it): each prompt prepared as a request of its own (its tokens, its context check, its `n` wire requests, each
routed on its own tokens), and run as one generation whose choices are every prompt's, prompt `i`'s choice `j` at
index `i * n + j`. The choices already fan in by that flat index (`fan_in.py`), so a batch is one `GenerationRun`
whose echo, usage, ISL and cached tokens are counted per prompt (`BatchedCompletionRun`); a single prompt never
comes here (`is_batched`).

Admission counts a batch as one request, as it counts the `n` choices of one prompt. The response's `nvext` fields
of one worker stream (`worker_id`, `timing` with its `kv_hit_rate`) are prompt 0's first choice's, as they are a
request's first choice's with `n > 1`."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from dynamo.frontend import annotations
from dynamo.frontend.choices import Choice
from dynamo.frontend.errors import ApiError, bad_prompt, bad_request
from dynamo.frontend.generation import GenerationRun
from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.preparation import PREP_INLINE_BYTES, TOKEN_DATA, wire_requests
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.protocol import RoutingHints

# A batch is prepared on the event loop, a prompt at a time with the loop's other work in between, while it is
# small: text up to PREP_INLINE_BYTES in all (as a body's), or up to INLINE_BATCH_IDS token ids (about a millisecond
# of checks; an echo's decoding costs ~4x that, so a quarter with `echo`). A bigger one is one job on the prep pool,
# its prompts one after another: it holds one of the pool's threads, never queues a job per prompt ahead of other
# requests' tokenization, and stops at its first bad prompt.
INLINE_BATCH_IDS = 32_768


def is_batched(req) -> bool:
    """Whether a completion's `prompt` is several prompts (a one-element list is the prompt it holds)."""
    prompt = req.prompt
    return type(prompt) is list and len(prompt) > 1 and isinstance(prompt[0], (str, list))


@dataclass
class PromptBatch:
    """A batch as prepared: each prompt's token ids, the wire requests of all their choices, prompt by prompt
    (prompt `i`'s choice `j` at `i * n + j`), and each prompt's `echo` text ([] without `echo`)."""

    ids: list[list[int]]
    preqs: list
    n: int
    echoes: list[str]

    def prompt_of(self, index: int) -> int:
        """The prompt a choice (by its flat index) answers."""
        return index // self.n


async def prepare(pipeline, req, hints: RoutingHints | None, pool, request_id: str | None,
                  trace_id: str | None) -> PromptBatch:
    """Every prompt tokenized and checked as a single prompt would be (the 400 names the prompt; the first bad one
    ends the batch's preparation), on the loop or on `pool` (`INLINE_BATCH_IDS`), then its `n` wire requests, all
    under one response id: choice `k`'s wire id is `cmpl-<id>-k`, so each prompt's requests are its own and the
    run's id is the one they share."""
    _refuse_unbatchable(req)
    ids, echoes = await _prompts(pipeline, req.prompt, bool(req.echo), pool)
    rid = request_id or uuid.uuid4().hex
    preqs: list = []
    for i, (prompt, prompt_ids) in enumerate(zip(req.prompt, ids)):
        if i:
            await asyncio.sleep(0)  # a prompt's requests at a time: `n` of them copy its ids
        try:
            preqs += wire_requests(pipeline, msgspec.structs.replace(req, prompt=prompt), prompt_ids, False, hints,
                                   rid, trace_id)
        except ApiError as exc:
            raise _of_prompt(exc, i) from None
    for k, preq in enumerate(preqs):
        preq.request_id = f"cmpl-{rid}-{k}"
    return PromptBatch(ids, preqs, req.choices(), echoes)


def _refuse_unbatchable(req) -> None:
    """What names one prompt's tokens or routing, or is judged by one prompt's end (the reasoning budget starts
    where its prompt leaves the reasoning), cannot stand for several: refused, never applied to one."""
    if (req.nvext or {}).get("token_data") is not None:
        raise bad_request(f"{TOKEN_DATA} cannot be given with batched prompts", TOKEN_DATA, "unsupported_value")
    # The routing query, and the one prompt as the model got it (its text and ids: which prompt's?).
    asked = annotations.requested(req.nvext)
    for name in (annotations.QUERY_INSTANCE_ID, annotations.FORMATTED_PROMPT, annotations.TOKEN_IDS):
        if name in asked:
            raise bad_request(f"the {name} annotation cannot be given with batched prompts", annotations.PARAM,
                              "unsupported_value")
    field, budget = req.thinking_budget()
    if budget is not None:
        raise bad_request(f"`{field}` cannot be given with batched prompts: send one prompt per request", field,
                          "unsupported_value")


async def _prompts(pipeline, prompts: list, echo: bool, pool) -> tuple[list[list[int]], list[str]]:
    """Each prompt's token ids and `echo` text: inline with the loop free between prompts, or as one pool job
    (which a cancelled request stops after the prompt at hand)."""
    if isinstance(prompts[0], str):
        inline = sum(map(len, prompts)) <= PREP_INLINE_BYTES
    else:
        inline = sum(map(len, prompts)) <= (INLINE_BATCH_IDS // 4 if echo else INLINE_BATCH_IDS)
    if inline:
        ids, echoes = [], []
        for i, prompt in enumerate(prompts):
            if i:
                await asyncio.sleep(0)
            _prepared_prompt(pipeline, prompt, i, echo, ids, echoes)
        return ids, echoes
    stop = threading.Event()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, _prepare_all, pipeline, prompts, echo, stop)
    finally:
        stop.set()


def _prepare_all(pipeline, prompts: list, echo: bool, stop: threading.Event) -> tuple[list[list[int]], list[str]]:
    """The pool job: every prompt in turn, until the first bad one (its 400), or until its request is gone."""
    ids: list[list[int]] = []
    echoes: list[str] = []
    for i, prompt in enumerate(prompts):
        if stop.is_set():
            break  # nobody reads what it has
        _prepared_prompt(pipeline, prompt, i, echo, ids, echoes)
    return ids, echoes


def _prepared_prompt(pipeline, prompt: str | list[int], i: int, echo: bool, ids: list, echoes: list) -> None:
    """Prompt `i`'s token ids added to `ids` (its 400 naming it) and, with `echo`, its text to `echoes` (token ids
    decoded)."""
    try:
        ids.append(pipeline.completion_prompt_ids(prompt))
    except PreprocessError as exc:
        raise _of_prompt(bad_prompt(exc), i) from None
    if echo:
        echoes.append(prompt if isinstance(prompt, str) else
                      pipeline.tokenizer.decode(ids[-1], skip_special_tokens=False))


def _of_prompt(exc: ApiError, index: int) -> ApiError:
    """A prompt's 400, saying which prompt of the batch it is about (all else, its class included, as it was);
    any other error as it is."""
    if exc.status != 400:
        return exc
    error = exc.__class__.__new__(exc.__class__)
    error.__dict__.update(exc.__dict__)
    error.message = f"prompt[{index}]: {exc.message}"
    error.args = (error.message,)
    return error


class BatchedCompletionRun(GenerationRun):
    """The generation of a batch: the run of its flat choices, with each choice echoing its own prompt, and usage
    and ISL (prompt and cached tokens) summed over the prompts, each counted once whatever its `n`."""

    def __init__(self, *args: Any, batch: PromptBatch, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.batch = batch
        self._cached = [0] * len(batch.ids)

    def _echo(self, req) -> str:
        return ""  # each choice's own prompt is `_echo_of`'s, decoded where the batch was prepared

    def _echo_of(self, choice: Choice) -> str:
        return self.batch.echoes[self.batch.prompt_of(choice.index)] if self.batch.echoes else ""

    def _chunk_bytes(self, choice: Choice, d: ChoiceDelta) -> bytes:
        if self.batch.echoes and not choice.started:  # its prompt before its first text (the base's `echo` is "")
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
    def input_tokens(self) -> int:
        """Every prompt's length, each once (not once per choice)."""
        return sum(len(ids) for ids in self.batch.ids)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens  # an engine's count is one prompt's

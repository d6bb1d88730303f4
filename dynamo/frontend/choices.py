"""One choice of a generation (`n` of them per request): its state while it streams (`Choice`) and,
for a unary answer (and the answer a next turn repeats), what it adds up to: the chat message with
its reasoning and tool calls, or the completion's text. `HeldCalls` is the rule a stream framed as
items (Anthropic's, Responses') follows for its calls, to end as its unary answer would."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.output import ChoiceDelta, OutputStage
from dynamo.frontend.parsers.base import ToolCallDelta, accumulate_call


class Choice:
    """One choice's state: its worker stream handle, output stage and what it produced."""

    def __init__(self, index: int, stage: OutputStage) -> None:
        self.index = index
        self.stage = stage
        self.handle = RequestHandle()
        self.finish: str | None = None  # engine finish reason (wire name) once done
        self.stop_reason: int | str | None = None  # the engine's matched stop (token id or string)
        self.started = False  # streaming: the role was sent
        self.text_len = 0  # completions logprobs text_offset
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict] = {}
        self.logprobs: list = []

    @property
    def done(self) -> bool:
        return self.finish is not None

    def logprob_entries(self) -> int:
        """How many logprob entries the answer holds (each token's, and its top alternatives)."""
        return sum(1 + len(top or ()) for _, _, top in self.logprobs)


def collect(choice: Choice, d: ChoiceDelta) -> None:
    """Add a delta to what the choice produced (a unary answer is assembled from them)."""
    choice.content.append(d.content)
    choice.reasoning.append(d.reasoning)
    choice.logprobs += d.logprobs
    for call in d.tool_calls:
        accumulate_call(choice.calls, call)


def chat_choice(choice: Choice, reasoning_field: str, logprobs: Callable[[list], Any] | None,
                runnable: Callable[[str], bool] | None = None) -> dict:
    """The choice as a chat completion's `choices[i]`; `logprobs` renders its logprobs (None: not asked for).
    Its calls are the ones the chat stream sent, whose deltas go out as they are parsed and cannot be taken
    back: a call whose arguments never became JSON (cut by the token limit or a stop string, or malformed) is
    still that call, and `finish_reason` says `tool_calls` only when every call's arguments are JSON. For a
    forced call (tool_choice named or required) that is vLLM's answer too; for a call in the model's own format
    vLLM's non-streaming extraction answers the text instead, and ours answers unary as its stream did: a
    deliberate choice, so that a request gets one answer either way. `runnable`: for a framing whose stream
    holds its calls until the answer is complete (`HeldCalls`), the rule a call must meet; an answer with one
    that does not is the text the model wrote."""
    content = "".join(choice.content)
    reason = choice.stage.finish_reason(choice.finish)
    calls = [choice.calls[k] for k in sorted(choice.calls)]
    if runnable is not None and calls and not all(runnable(c["function"]["arguments"]) for c in calls):
        content, calls = choice.stage.tool_input_text(), []
        reason = "stop" if reason == "tool_calls" else reason
    if not calls and not content and choice.stage.filter.dropped:
        # Only calls the request did not allow (another function than the named one): the model's text, not
        # an empty answer.
        content = choice.stage.tool_input_text()
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    reasoning = "".join(choice.reasoning)
    if reasoning:
        message[reasoning_field] = reasoning
    if calls:
        message["tool_calls"] = calls
    lp = logprobs(choice.logprobs) if logprobs is not None else None
    return {"index": choice.index, "message": message, "logprobs": lp, "finish_reason": reason}


def text_first(contents: list[str], reasonings: list[str]) -> bool:
    """Whether an answer's text began before its reasoning (a preamble, then thinking), from its deltas'
    text and reasoning in order (one delta with both: reasoning first, as a stream sends it). Its items come
    in that order, unary or streamed."""
    return next((not r for c, r in zip(contents, reasonings) if c or r), False)


@dataclass
class HeldCalls:
    """A stream's tool calls held back until the answer is complete, for APIs whose calls are items a
    client runs as soon as one is done (Anthropic's tool_use blocks, Responses' function_call items): a
    call whose arguments never became what `runnable` accepts must not go out as one. From the first call
    on, every delta is held (a delta with a call whole: its text may follow the call); at the end, what
    was held goes out as the unary answer has it: if every call is runnable, its reasoning and text (in the
    order the answer began with: `text_first`), then each call whole, in index order; else the text the
    model wrote. So each block or item opens once."""

    runnable: Callable[[str], bool]
    shown: list[str] = field(default_factory=list)  # the text sent before the first call (joined at release)
    held: list[ChoiceDelta] | None = None
    text_first: bool | None = None  # whether the text began before the reasoning (None: neither came yet)

    def take(self, d: ChoiceDelta) -> ChoiceDelta | None:
        """The delta to send now, or None: held."""
        if self.text_first is None and (d.content or d.reasoning):
            self.text_first = not d.reasoning
        if self.held is None and not d.tool_calls:
            self.shown.append(d.content)
            return d
        if self.held is None:
            self.held = []
        self.held.append(d)
        return None

    def release(self, stage: OutputStage, written_logprobs: Callable[[str], list] | None = None,
                ) -> tuple[list[ChoiceDelta], bool]:
        """(what to send, whether it carries calls) once the answer is complete; `written_logprobs` gives the
        logprob entries of the held text a call that never became JSON is answered with (None: the held
        deltas' own)."""
        if self.held is None:
            return [], False
        calls: dict[int, dict] = {}
        for d in self.held:
            for call in d.tool_calls:
                accumulate_call(calls, call)
        reasoning = "".join(d.reasoning for d in self.held)
        logprobs = [entry for d in self.held for entry in d.logprobs]  # the held deltas' (their text's, for Responses)
        if all(self.runnable(c["function"]["arguments"]) for c in calls.values()):
            # One piece per call: pieces of calls that interleaved (0, 1, 0) would open call 0 twice.
            whole = [ToolCallDelta(i, c["id"], c["function"]["name"], c["function"]["arguments"])
                     for i, c in sorted(calls.items())]
            text = "".join(d.content for d in self.held)
            return self._in_order(text, reasoning, logprobs) + [ChoiceDelta(tool_calls=whole)], bool(calls)
        written = stage.tool_input_text()  # what the unary answer shows; the stream sent its start
        shown = "".join(self.shown)
        rest = written[len(shown):] if written.startswith(shown) else "".join(d.content for d in self.held)
        if written_logprobs is not None:
            logprobs = written_logprobs(rest)
        return self._in_order(rest, reasoning, logprobs), False

    def _in_order(self, text: str, reasoning: str, logprobs: list) -> list[ChoiceDelta]:
        """The held text and reasoning in the order the answer began with: text first when it began with text
        (that continues the text shown), so neither opens a second block or item."""
        pair = [ChoiceDelta(text, logprobs=logprobs if text else []), ChoiceDelta("", reasoning)]
        return [d for d in (pair if self.text_first else pair[::-1]) if d]


def echo_text(req, prompt_ids: list[int], decode) -> str:
    """Completions `echo`: the prompt as the client sent it, before the completion."""
    if not getattr(req, "echo", False):
        return ""
    prompt = req.prompt
    if isinstance(prompt, str):
        return prompt
    if prompt and isinstance(prompt[0], str):
        return prompt[0]
    return decode(prompt_ids, skip_special_tokens=False)


def token_text(req, decode) -> Callable[[int], str]:
    """How an answer spells a logprob token: by id with `return_tokens_as_token_ids` (text a client can map back
    exactly), else its text, memoized (top logprobs name the same few thousand tokens over and over)."""
    if req.return_tokens_as_token_ids:
        return lambda token_id: f"token_id:{token_id}"
    return functools.cache(lambda token_id: decode([token_id], skip_special_tokens=False))

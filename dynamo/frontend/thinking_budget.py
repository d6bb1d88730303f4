"""The reasoning budget (`nvext.max_thinking_tokens`, Anthropic's `thinking.budget_tokens`),
enforced by the frontend whatever the engine: once a request has reasoned for its budget, its
worker stream is stopped, the closing tag is appended as if the model had written it, and the
request goes on with prompt + output + tag as its prompt, so the model answers from the reasoning
it has. It goes on pinned to the same worker, whose cache holds all of it (a migration after that
is not held to the pin), so the continuation prefills only the tokens past its last cached block.

The dispatcher owns the continuation; this module says where a stream crosses its budget. It
applies to models whose reasoning parser names its tags (`BudgetTags`): `<think>`..`</think>` (the
qwen3 and deepseek_r1 families), and gpt-oss's analysis message, closed early by moving to the
final channel. For others the budget goes to the engine, as Dynamo sends it.
Counted are the tokens after the opening tag (or from the start, where the chat template opened
it), as vLLM's `thinking_token_budget` counts them. Whether the template opened (or closed) it is
the request's one judgement of its prompt (`PromptReasoning`, preparation.py), which the output
stage's reasoning parser starts from too: the budget counts what the client is shown as reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dynamo.frontend.parsers import make_reasoning_parser
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.llm.tokenizer import Tokenizer


@dataclass(frozen=True)
class ThinkMarkers:
    """A model's reasoning tags as token ids (`close` starts with `end`)."""

    start: tuple[int, ...]
    end: tuple[int, ...]
    starts_inside: bool  # the chat template opens the reasoning: output starts in it
    close: tuple[int, ...]  # what closes the reasoning early (`end` itself for tag parsers)


def think_markers(reasoning_parser: str | None, tokenizer: Tokenizer) -> ThinkMarkers | None:
    """The budget tags of `reasoning_parser` in this tokenizer's ids; None when it has none."""
    if not reasoning_parser:
        return None
    tags = make_reasoning_parser(reasoning_parser).budget_tags
    if tags is None:
        return None
    start, end, close = (tuple(tokenizer.encode(text)) for text in (tags.start, tags.end, tags.close))
    if not start or not end or close[:len(end)] != end:
        return None
    return ThinkMarkers(start, end, tags.starts_inside, close)


class ThinkingBudget:
    """One stream's reasoning count: `spend` reads each batch of outputs and cuts it where the
    budget runs out, after which the caller appends `closing_output()` and continues the request."""

    def __init__(self, budget: int, markers: ThinkMarkers, prompt: PromptReasoning = PromptReasoning.UNKNOWN) -> None:
        self.budget = budget
        self.markers = markers
        self.inside = markers.starts_inside if prompt is PromptReasoning.UNKNOWN else prompt is PromptReasoning.OPENED
        # reasoning closed (by the model, by us, or by the template: thinking off): nothing to count
        self.done = prompt is PromptReasoning.CLOSED
        self.spent = 0
        self._tail: list[int] = []  # the last ids, to find a tag split across outputs
        self._written = 0  # how much of the closing tag the model wrote before the cut

    def spend(self, outputs: list[LLMEngineOutput]) -> tuple[list[LLMEngineOutput], bool]:
        """`outputs` up to where the budget ran out, and whether it did (then the rest is dropped)."""
        if self.done:
            return outputs, False
        for i, out in enumerate(outputs):
            keep = self._keep(out.token_ids)
            if keep is not None:
                self.done = True
                return outputs[:i] + _cut(out, keep), True
        return outputs, False

    def _keep(self, ids: list[int]) -> int | None:
        """How many of `ids` fit the budget, None when all do. A token that may begin the closing
        tag is never where the cut falls: the model may be closing its reasoning right then."""
        start, end = self.markers.start, self.markers.end
        for i, token in enumerate(ids):
            before, self._tail = self._tail, (self._tail + [token])[-max(len(start), len(end)):]
            if not self.inside:
                self.inside = _ends_with(self._tail, start)
                continue
            if _ends_with(self._tail, end):
                self.done = True
                return None
            if self.spent >= self.budget and not _opens(self._tail, end):
                self._written = _opens(before, end)
                return i
            self.spent += 1
        return None

    def closing_output(self) -> LLMEngineOutput:
        """The closing tag (what the model had not written of it yet), streamed as if it had."""
        return LLMEngineOutput(token_ids=list(self.markers.close[self._written:]))


def _opens(ids: list[int], tag: tuple[int, ...]) -> int:
    """How many of `tag`'s first tokens `ids` ends with (short of the whole tag)."""
    return next((k for k in range(len(tag) - 1, 0, -1) if _ends_with(ids, tag[:k])), 0)


def _ends_with(ids: list[int], tag: tuple[int, ...]) -> bool:
    return len(ids) >= len(tag) and tuple(ids[-len(tag):]) == tag


def _cut(out: LLMEngineOutput, keep: int) -> list[LLMEngineOutput]:
    """`out`'s first `keep` tokens (and their logprobs), without its finish: the request goes on."""
    if keep == 0 and out.cached_tokens is None:
        return []
    return [msgspec.structs.replace(
        out, token_ids=out.token_ids[:keep], finish_reason=None, stop_reason=None,
        log_probs=None if out.log_probs is None else out.log_probs[:keep],
        top_logprobs=None if out.top_logprobs is None else out.top_logprobs[:keep])]


def budget_for(request: PreprocessedRequest, markers: ThinkMarkers | None,
               prompt: PromptReasoning = PromptReasoning.UNKNOWN) -> tuple[PreprocessedRequest, ThinkingBudget | None]:
    """The request as the worker gets it and the budget the frontend keeps: taken off the wire
    request when the frontend can enforce it, else left there for the engine. `prompt`: where the
    request's prompt leaves the reasoning."""
    budget = request.stop_conditions.max_thinking_tokens
    if budget is None or markers is None:
        return request, None
    stop = msgspec.structs.replace(request.stop_conditions, max_thinking_tokens=None)
    return msgspec.structs.replace(request, stop_conditions=stop), ThinkingBudget(budget, markers, prompt)

"""The output stage: one per choice, it turns the worker's token stream into what the
client sees. Fixed order, each step a named piece:

    token ids -> detokenize -> stop strings -> reasoning parser -> tool-call parser
              -> (logprobs alongside) -> ChoiceDelta

Parsers come from the registry (`dynamo.frontend.parsers`) by the names in the
worker's model card. Everything here is synchronous and per token batch; the HTTP
layer only frames what this stage returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import msgspec

from dynamo.frontend.parsers import ToolCallDelta, make_reasoning_parser, make_tool_parser
from dynamo.frontend.parsers.base import PromptReasoning, ToolParser, new_call_id
from dynamo.frontend.parsers.tool_formats import JsonListParser
from dynamo.frontend.reasoning_tokens import ReasoningTokens
from dynamo.frontend.sse import openai_finish_reason
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput


@dataclass
class ChoiceDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[tuple[int, float, tuple[tuple[int, float], ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls or self.logprobs)


@dataclass
class OutputSpec:
    """What a request asks of the output stage (same for all its choices)."""

    stops: list[str]
    include_stop: bool = False  # vLLM's include_stop_str_in_output: the matched stop string is shown
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    tools: list[dict] | None = None
    tool_mode: str = "none"  # none | auto | required | named
    named_tool: str | None = None
    parallel_tool_calls: bool = True
    # tool_choice required / named: the engine was held to the calls as JSON (`forced_tool_json`), so the
    # answer is read as that JSON, not in the model's own format.
    tool_json: bool = False
    # Where the rendered prompt leaves the reasoning (preparation.py judges it once per request).
    prompt_reasoning: PromptReasoning = PromptReasoning.UNKNOWN


class NamedArguments:
    """`tool_choice` naming a function with no format parser: the engine was asked for
    that function's arguments (structured output), so the whole output is the call, JSON or
    not (an engine that held it to no grammar, or `max_tokens` cutting it short), streamed
    and unary alike, as vLLM answers a named tool choice (a call in the model's own format
    cut short: `choices.chat_choice`)."""

    needs_special_tokens = False

    def __init__(self, name: str) -> None:
        self._name = name
        self._started = False

    @property
    def calls(self) -> int:
        return 1 if self._started else 0

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        if not text:
            return "", []
        if not self._started:
            self._started = True
            return "", [ToolCallDelta(0, new_call_id(), self._name, text)]
        return "", [ToolCallDelta(0, arguments=text)]

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return "", []


class CallFilter:
    """Keeps the calls the request allows (`tool_choice` named, `parallel_tool_calls`
    false) and renumbers them 0.. so clients see consecutive indexes; remembers each kept
    call's arguments, to tell whether they became JSON."""

    def __init__(self, named: str | None, single: bool) -> None:
        self._named = named
        self._single = single
        self._map: dict[int, int | None] = {}
        self._arguments: dict[int, list[str]] = {}
        self.refused = False  # a call of another function than the named one was left out

    def __call__(self, deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
        out = []
        for d in deltas:
            if d.index not in self._map:
                kept = sum(1 for v in self._map.values() if v is not None)
                named_ok = self._named is None or d.name == self._named
                self.refused = self.refused or not named_ok
                ok = named_ok and not (self._single and kept)
                self._map[d.index] = kept if ok else None
            new = self._map[d.index]
            if new is not None:
                d.index = new
                self._arguments.setdefault(new, []).append(d.arguments or "")
                out.append(d)
        return out

    def all_json(self) -> bool:
        """Every kept call's arguments are JSON (a call cut short by a stop or the token limit is not)."""
        return all(is_json("".join(parts)) for parts in self._arguments.values())

    @property
    def kept(self) -> int:
        return sum(1 for v in self._map.values() if v is not None)

    @property
    def dropped(self) -> bool:
        """Calls the request did not allow were left out (another function than the named one)."""
        return any(v is None for v in self._map.values())


class RefusedCall:
    """`tool_choice` named a function and the model called another (an engine that held it to no grammar):
    the answer is the text the model wrote, that call's block included, streamed and unary alike (a stream
    that dropped the call would otherwise end empty). From the first such call on, content is held; a call
    of the named function after it lets the held text go (that call stands, the other stays out, as
    CallFilter has it); the end with none shows all the model wrote from where the stream had got to."""

    def __init__(self) -> None:
        self._shown: list[str] = []
        self._held: list[str] | None = None

    def take(self, text: str, calls: CallFilter, final: bool, written: Callable[[], str]) -> str:
        """The content to show now of `text` (the tool parser's content for this batch)."""
        if self._held is None and not (calls.refused and not calls.kept):
            self._shown.append(text)
            return text
        if self._held is None:
            self._held = []
        self._held.append(text)
        if calls.kept:
            held, self._held = "".join(self._held), None
            return held
        if not final:
            return ""
        shown, everything = "".join(self._shown), written()
        return everything[len(shown):] if everything.startswith(shown) else "".join(self._held)


class OutputStage:
    def __init__(self, pipeline: ModelPipeline, spec: OutputSpec) -> None:
        self.reasoning = make_reasoning_parser(spec.reasoning_parser) if spec.reasoning_parser else None
        if self.reasoning is not None:
            self.reasoning.prompt_ended(spec.prompt_reasoning)
        self.tools = self._tool_parser(spec)
        self.filter = CallFilter(spec.named_tool if spec.tool_mode == "named" else None,
                                 not spec.parallel_tool_calls)
        # Only the model's own format can name another function (NamedArguments is the named call itself).
        self._refused = RefusedCall() if spec.tool_mode == "named" and not isinstance(self.tools, NamedArguments) \
            else None
        specials = any(getattr(p, "needs_special_tokens", False) for p in (self.reasoning, self.tools) if p)
        self.assembler = pipeline.assembler(spec.stops, skip_special_tokens=not specials,
                                            include_stop=spec.include_stop)
        # Shown special tokens must not include the end-of-sequence marker itself.
        self._hide = frozenset(pipeline.eos_token_ids) if specials else frozenset()
        self.stopped = False
        self._tool_input: list[str] = []  # what the tool parser saw, for the unary fallback
        # usage's reasoning_tokens: what the reasoning parser made of each output's tokens
        self.reasoning_count = ReasoningTokens() if self.reasoning is not None else None
        # Each output's delta passes through it, where set (only when logprobs were asked for): what keeps
        # only some of its logprob entries (Responses: its text's), judged before outputs are folded together.
        self.logprob_route: Callable[[ChoiceDelta], ChoiceDelta] | None = None

    @staticmethod
    def _tool_parser(spec: OutputSpec) -> ToolParser | None:
        if spec.tool_mode == "none":
            return None
        forced: ToolParser | None = None
        if spec.tool_mode == "named":
            forced = NamedArguments(spec.named_tool or "")
        elif spec.tool_mode == "required":
            forced = JsonListParser(spec.tools)
        if forced is not None and (spec.tool_json or not spec.tool_parser):
            return forced
        if spec.tool_parser:  # the model's own format: `named` keeps that function's calls (CallFilter)
            return make_tool_parser(spec.tool_parser, spec.tools)
        return make_tool_parser("default", spec.tools)  # Dynamo's fallback for `auto`

    @property
    def completion_tokens(self) -> int:
        return self.assembler.completion_tokens

    @property
    def matched_stop(self) -> str | None:
        """The stop string this stage matched in the text, if one ended the answer."""
        stop = self.assembler.stop
        return stop.matched if stop is not None else None

    def add(self, out: LLMEngineOutput, want_logprobs: bool = False) -> ChoiceDelta:
        ids = out.token_ids
        if self._hide:
            ids = [t for t in ids if t not in self._hide]
        if isinstance(out.stop_reason, int) and ids and ids[-1] == out.stop_reason:
            ids = ids[:-1]  # the stop token id that ended it: generated (and counted), never shown
        self.assembler.completion_tokens += len(out.token_ids) - len(ids)
        text = self.assembler.add(ids) if ids else ""
        self.stopped = self.assembler.stopped
        delta = self._parse(text, False, len(out.token_ids))
        if want_logprobs and out.log_probs:
            # Each position's alternatives as a tuple of (id, logprob) tuples: nothing in an entry then holds a
            # list, so the garbage collector stops tracking it. A unary answer keeps every entry until it is
            # sent (n 128 x 2,000 tokens: 256,000 of them), and as lists they made each full collection walk
            # them all, holding the process for most of a second.
            tops = [tuple(top) for top in out.top_logprobs] if out.top_logprobs else [()] * len(out.token_ids)
            delta.logprobs = list(zip(out.token_ids, out.log_probs, tops))
        return delta if self.logprob_route is None else self.logprob_route(delta)

    def finish(self) -> ChoiceDelta:
        delta = self._parse(self.assembler.finish(), True, 0)
        if self.reasoning_count is not None:
            self.reasoning_count.finish()
        return delta if self.logprob_route is None else self.logprob_route(delta)

    @property
    def reasoning_tokens(self) -> int:
        """The generated tokens the reasoning parser made reasoning of (usage's `reasoning_tokens`; 0 with no
        reasoning parser)."""
        return self.reasoning_count.count if self.reasoning_count is not None else 0

    def _parse(self, text: str, final: bool, tokens: int) -> ChoiceDelta:
        """The delta `text` makes (`tokens` of the engine's made it), through the reasoning and tool parsers."""
        reasoning = ""
        if self.reasoning is not None:
            reasoning, text = self.reasoning.feed(text) if text else ("", "")
            if final:
                r, c = self.reasoning.finish()
                reasoning, text = reasoning + r, text + c
            self.reasoning_count.add(tokens, len(reasoning), len(text))
        calls: list[ToolCallDelta] = []
        if self.tools is not None:
            self._tool_input.append(text)
            text, calls = self.tools.feed(text) if text else ("", [])
            if final:
                c, more = self.tools.finish()
                text, calls = text + c, calls + more
            calls = self.filter(calls)
            if self._refused is not None:
                text = self._refused.take(text, self.filter, final, self.tool_input_text)
        return ChoiceDelta(text, reasoning, calls)

    def tool_input_text(self) -> str:
        return "".join(self._tool_input)

    def finish_reason(self, raw: str | None) -> str:
        """A finished answer's reason: `tool_calls` when it made calls whose arguments are all JSON (streamed
        and unary alike; with a call cut short, the reason it was cut: `length`, or `stop`)."""
        reason = openai_finish_reason(raw) or "stop"
        if self.filter.kept and reason == "stop" and self.filter.all_json():
            return "tool_calls"
        return reason


def is_json(text: str) -> bool:
    """Strict JSON, as clients and the Anthropic route decode arguments (msgspec): no NaN, Infinity, 1e999."""
    try:
        msgspec.json.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return False
    return True

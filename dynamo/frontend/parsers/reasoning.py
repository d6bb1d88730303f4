"""Reasoning parsers: split model text into reasoning (`reasoning_content`) and the
answer. Tags split across tokens are held back, never shown.

- basic, qwen3 (and the other `<think>` families: GLM, Kimi K2, DeepSeek V3.x, MiniMax M2,
  Nemotron Deci): `<think>..</think>` when the model opens it.
- deepseek_r1 (and other "force reasoning" models): output starts inside reasoning,
  because the chat template already opened `<think>`; an opening tag, if the model
  repeats it, is dropped. Output with no `</think>` at all is all reasoning.
- kimi (`◁think▷..◁/think▷`), granite ("Here is my thought process:" .. "Here is my
  response:"), mistral (Magistral: `[THINK]..[/THINK]`, or `<think>` in its first release).
- minimax_append_think: no split; the answer keeps its reasoning, `<think>` put back in front
  (MiniMax's advice for M2: the reasoning must go back to the model in later turns).
- gpt_oss: Harmony's analysis channel is reasoning; the final channel is the answer;
  messages to a tool pass through, markup intact, for the `harmony` tool parser.

Where the rendered prompt ends decides where a tag parser starts (`judge_prompt`, then
`prompt_ended`): a prompt that ends with the opening tag (a template that opens the reasoning
for the model, as DeepSeek V3.1, GLM-4.7 and MiniMax M2 do in thinking mode) starts it inside;
one that ends with the closing tag (thinking switched off: Qwen3's `enable_thinking: false`)
makes the whole output the answer, even for a force-reasoning parser. The reasoning budget
(frontend/thinking_budget.py) starts from the same judgement.
"""

from __future__ import annotations

from dynamo.frontend.parsers.base import (
    BudgetTags,
    PromptReasoning,
    SteppedReasoning,
    register_reasoning_parser,
)
from dynamo.frontend.parsers.harmony import HarmonyStream


class ThinkTagParser(SteppedReasoning):
    def __init__(self, start: str | tuple[str, ...] = "<think>", end: str | tuple[str, ...] = "</think>",
                 forced: bool = False, *, needs_special_tokens: bool = False) -> None:
        # Tags that are special tokens must be detokenized with them shown, or they are never seen.
        self.needs_special_tokens = needs_special_tokens
        # Several spellings of a tag may be given; the first is the one a budget writes.
        self.starts = (start,) if isinstance(start, str) else tuple(start)
        self.ends = (end,) if isinstance(end, str) else tuple(end)
        self.budget_tags = BudgetTags(self.starts[0], self.ends[0], self.ends[0], starts_inside=forced)
        self._buf = ""
        self._in = forced
        self._done = False
        self._at_start = True  # a repeated opening tag may still come (forced mode)
        self._strip_lead = False

    def judge_prompt(self, tail: str) -> PromptReasoning:
        """A tag at the very end of the prompt (whitespace aside) says where the output starts: an
        opening one inside the reasoning, a closing one (thinking switched off) in the answer."""
        tail = tail.rstrip()
        if any(tail.endswith(tag) for tag in self.ends):
            return PromptReasoning.CLOSED
        if any(tail.endswith(tag) for tag in self.starts):
            return PromptReasoning.OPENED
        return PromptReasoning.UNKNOWN

    def prompt_ended(self, where: PromptReasoning) -> None:
        if where is PromptReasoning.CLOSED:
            self._in, self._done = False, True
        elif where is PromptReasoning.OPENED:
            self._in, self._at_start = True, True

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        buf = self._buf
        if self._done:
            if self._strip_lead:  # the blank line after `</think>` is layout, not answer
                buf = buf.lstrip("\n")
                if not buf:
                    self._buf = ""
                    return False
                self._strip_lead = False
            content.append(buf)
            self._buf = ""
            return False
        if self._in and self._at_start:
            stripped = buf.lstrip()
            if not stripped or any(t.startswith(stripped) and stripped != t for t in self.starts):
                return False  # could still be the opening tag
            self._at_start = False
            opening = next((t for t in self.starts if stripped.startswith(t)), None)
            if opening is not None:
                self._buf = stripped[len(opening):]
                return True
        if self._take_until(self.ends if self._in else self.starts, reasoning if self._in else content) is None:
            return False
        if self._in:
            self._in, self._done, self._strip_lead = False, True, True
        else:
            self._in, self._at_start = True, False
        return True

    def finish(self) -> tuple[str, str]:
        buf, self._buf = self._buf, ""
        return (buf, "") if self._in else ("", buf)


@register_reasoning_parser("basic", "qwen3", "qwen3_coder")
def _basic() -> ThinkTagParser:
    return ThinkTagParser()


@register_reasoning_parser("nemotron_deci", "glm45", "glm47", "kimi_k2", "minimax_m2", "deepseek_v3", "deepseek_v3_1",
                           "deepseek_v3_2")
def _think_tokens() -> ThinkTagParser:
    """`<think>` families whose tokenizers may make the tags special tokens: shown, so they are seen."""
    return ThinkTagParser(needs_special_tokens=True)


# Names NVIDIA Dynamo 1.6.1 takes whose formats are not known here: parsed as `<think>` tags, which is
# Dynamo's own fallback for a reasoning parser it does not know (output without the tags stays the answer).
UNVERIFIED = ("deepseek_v4", "deepseek_v41", "gemma4", "kimi_k3", "minimax_m3", "muse", "muse_glimmer")
register_reasoning_parser(*UNVERIFIED)(_think_tokens)


@register_reasoning_parser("deepseek_r1", "step3", "nemotron_nano", "nemotron3", "nemotron_v3", "kimi_k25")
def _forced() -> ThinkTagParser:
    return ThinkTagParser(forced=True)


@register_reasoning_parser("mistral")
def _mistral() -> ThinkTagParser:
    """Magistral reasons first: `[THINK]..[/THINK]` (special tokens), `<think>` in its first release."""
    # `[THINK]` is a control token: plain detokenization drops it.
    return ThinkTagParser(("[THINK]", "<think>"), ("[/THINK]", "</think>"), forced=True, needs_special_tokens=True)


@register_reasoning_parser("kimi")
def _kimi() -> ThinkTagParser:
    return ThinkTagParser("◁think▷", "◁/think▷")


@register_reasoning_parser("granite")
def _granite() -> ThinkTagParser:
    """Granite 3.2+ with `thinking`: the reasoning and the answer follow fixed phrases."""
    return ThinkTagParser(("Here is my thought process:", "Here's my thought process:"),
                          ("Here is my response:", "Here's my response:"))


class AppendThinkParser:
    """No split: the reasoning stays in the answer, with the `<think>` the template opened put
    back in front, as MiniMax advises for M2 (later turns must carry the reasoning back)."""

    needs_special_tokens = False
    budget_tags = None

    def __init__(self) -> None:
        self._started = False
        self._opened = True  # unless the prompt is known not to end with `<think>`

    def judge_prompt(self, tail: str) -> PromptReasoning:
        """Opened or not: with no tags to parse, a prompt that does not end with `<think>` leaves
        nothing open, whatever else it ends with."""
        return PromptReasoning.OPENED if tail.rstrip().endswith("<think>") else PromptReasoning.CLOSED

    def prompt_ended(self, where: PromptReasoning) -> None:
        if where is not PromptReasoning.UNKNOWN:
            self._opened = where is PromptReasoning.OPENED

    def feed(self, text: str) -> tuple[str, str]:
        if not text:
            return "", ""
        if not self._started:
            self._started = True
            if self._opened and not text.lstrip().startswith("<think>"):
                return "", "<think>" + text
        return "", text

    def finish(self) -> tuple[str, str]:
        return "", ""


register_reasoning_parser("minimax_append_think")(AppendThinkParser)


class GptOssReasoningParser:
    needs_special_tokens = True
    # The analysis message is the reasoning; closing it early moves the answer to the final channel.
    budget_tags = BudgetTags("<|channel|>analysis<|message|>", "<|end|>",
                             "<|end|><|start|>assistant<|channel|>final<|message|>", starts_inside=False)

    def __init__(self) -> None:
        self._stream = HarmonyStream()

    def judge_prompt(self, tail: str) -> PromptReasoning:
        """Harmony's output opens its own channels: the prompt's end says nothing about them."""
        return PromptReasoning.UNKNOWN

    def prompt_ended(self, where: PromptReasoning) -> None:
        pass

    def feed(self, text: str) -> tuple[str, str]:
        return self._route(self._stream.feed(text))

    def finish(self) -> tuple[str, str]:
        return self._route(self._stream.finish())

    @staticmethod
    def _route(events: list[tuple]) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        for kind, channel, recipient, text in events:
            if recipient:  # a tool message: keep its markup for the tool parser
                if kind == "start":
                    content.append(text + "<|message|>")
                elif kind == "end":
                    content.append(text or "<|call|>")
                else:
                    content.append(text)
            elif kind == "text":
                (reasoning if channel == "analysis" else content).append(text)
        return "".join(reasoning), "".join(content)


register_reasoning_parser("gpt_oss")(GptOssReasoningParser)

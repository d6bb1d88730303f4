"""Reasoning parsers: split model text into reasoning (`reasoning_content`) and the
answer. Tags split across tokens are held back, never shown.

- basic, qwen3: `<think>..</think>` when the model opens it.
- deepseek_r1 (and other "force reasoning" models): output starts inside reasoning,
  because the chat template already opened `<think>`; an opening tag, if the model
  repeats it, is dropped. Output with no `</think>` at all is all reasoning.
- gpt_oss: Harmony's analysis channel is reasoning; the final channel is the answer;
  messages to a tool pass through, markup intact, for the `harmony` tool parser.
"""

from __future__ import annotations

from dynamo.frontend.parsers.base import BudgetTags, find_first, partial_suffix, register_reasoning_parser
from dynamo.frontend.parsers.harmony import HarmonyStream


class ThinkTagParser:
    needs_special_tokens = False

    def __init__(self, start: str = "<think>", end: str = "</think>", forced: bool = False) -> None:
        self.start, self.end = start, end
        self.budget_tags = BudgetTags(start, end, end, starts_inside=forced)
        self._buf = ""
        self._in = forced
        self._done = False
        self._at_start = True  # a repeated opening tag may still come (forced mode)
        self._strip_lead = False

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        reasoning: list[str] = []
        content: list[str] = []
        while self._buf and self._step(reasoning, content):
            pass
        return "".join(reasoning), "".join(content)

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
            if not stripped or (self.start.startswith(stripped) and stripped != self.start):
                return False  # could still be the opening tag
            self._at_start = False
            if stripped.startswith(self.start):
                self._buf = stripped[len(self.start):]
                return True
        tag = self.end if self._in else self.start
        i, _ = find_first(buf, (tag,))
        out = reasoning if self._in else content
        if i == -1:
            keep = partial_suffix(buf, (tag,))
            out.append(buf[:len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return False
        out.append(buf[:i])
        self._buf = buf[i + len(tag):]
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


@register_reasoning_parser("deepseek_r1", "mistral", "step3", "nemotron_nano", "nemotron3", "kimi_k25")
def _forced() -> ThinkTagParser:
    return ThinkTagParser(forced=True)


class GptOssReasoningParser:
    needs_special_tokens = True
    # The analysis message is the reasoning; closing it early moves the answer to the final channel.
    budget_tags = BudgetTags("<|channel|>analysis<|message|>", "<|end|>",
                             "<|end|><|start|>assistant<|channel|>final<|message|>", starts_inside=False)

    def __init__(self) -> None:
        self._stream = HarmonyStream()

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

"""How many of a choice's generated tokens its reasoning parser routed into reasoning: the count usage
reports as `reasoning_tokens` (chat's `completion_tokens_details`, Responses' `output_tokens_details`).

Parsers split text, not tokens, and the engine sends tokens in batches, so each batch's tokens are
shared out as its text was: all to reasoning when the parser made only reasoning of it, none when only
answer, in proportion when both. Tokens that showed nothing yet (a tag, text a parser or the stop matcher
holds, a split UTF-8 character) go with the next text shown: an opening `<think>` counts as reasoning, a
closing one as answer. What is still unshown at the end (the end-of-sequence token) goes as the last
text shown went. One token per batch (a stream) makes the count exact up to those tags."""

from __future__ import annotations


class ReasoningTokens:
    """One choice's count, fed each batch's token count and the characters it became."""

    __slots__ = ("count", "_pending", "_share")

    def __init__(self) -> None:
        self.count = 0
        self._pending = 0  # tokens whose text has not been shown yet
        self._share: float | None = None  # the reasoning share of the last batch that showed text

    def add(self, tokens: int, reasoning_chars: int, answer_chars: int) -> None:
        """An output of `tokens` whose text the reasoning parser split into these many characters."""
        if not answer_chars:  # the usual output: all reasoning, or nothing shown yet (no division then)
            if reasoning_chars:
                self.count += self._pending + tokens
                self._pending, self._share = 0, 1.0
            else:
                self._pending += tokens
            return
        if not reasoning_chars:  # all answer
            self._pending, self._share = 0, 0.0
            return
        self._share = reasoning_chars / (reasoning_chars + answer_chars)
        self.count += round((self._pending + tokens) * self._share)
        self._pending = 0

    def finish(self) -> None:
        """The end (after the last output's `add`, the text held until then): the tokens still unshown go
        as the last text shown went."""
        if self._pending and self._share is not None:
            self.count += round(self._pending * self._share)
        self._pending = 0

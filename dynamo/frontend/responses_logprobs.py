"""Token logprobs on a Responses answer's text (asked for by `include: ["message.output_text.logprobs"]`,
with `top_logprobs` alternatives per token): which of the engine's per-token entries belong to the text
(`TextLogprobs`), and their two shapes in the Responses schema. An `output_text` part's `logprobs` are
chat's entries (token, logprob, bytes, top_logprobs, rendered by `logprob_json.ChatLogprobs`); the
`response.output_text.delta` / `.done` events carry them without `bytes` (`EventLogprob`), as the
schema has them.

Only the message's text has logprobs in this API: reasoning and function calls carry none, so the
entries of tokens that became those are left out (a call's kept aside, for the answer whose call never
became JSON and is answered as the text the model wrote)."""

from __future__ import annotations

from typing import Callable

import msgspec

from dynamo.frontend.logprob_json import Entry, TokenLogprob
from dynamo.frontend.output import ChoiceDelta

_TEXT, _REASONING, _CALL = range(3)  # what an output's tokens became
# How far past the text's length a run of tokens' text may grow before it no longer ends (or begins) with it.
_SLACK = 8


class EventTopLogprob(msgspec.Struct, gc=False):
    token: str
    logprob: float


class EventLogprob(msgspec.Struct, gc=False):
    token: str
    logprob: float
    top_logprobs: list[EventTopLogprob]


def event_logprobs(parts: list[TokenLogprob]) -> list[EventLogprob]:
    """An output_text part's logprobs as the text events carry them (no `bytes`)."""
    return [EventLogprob(p.token, p.logprob, [EventTopLogprob(t.token, t.logprob) for t in p.top_logprobs])
            for p in parts]


class TextLogprobs:
    """Keeps, of each engine output's logprob entries, those of tokens that became text, judged one output
    at a time (`OutputStage.logprob_route`: before a fan-in batch folds several outputs into one delta).
    An output that made only reasoning or only calls gives its entries to them; one that made text beside
    them gives the text the entries of the tokens whose text it is (the last ones where it ends with the
    text, else the first). Tokens that showed nothing yet (a tag, half a UTF-8 character, a stop string's
    prefix) wait for what they become: after text they are the next text's; after reasoning or a call, the
    next text's as far as their tokens' text is that text, the rest closing markup (`</think>`,
    `</tool_call>`). Reasoning's entries are dropped; a call's are kept in `written` with the text's, in
    order (what the tool parser read), for an answer whose call never became JSON: that text is the answer."""

    __slots__ = ("_decode", "_pending", "_last", "written")

    def __init__(self, decode: Callable[[list[int]], str], calls: bool = False) -> None:
        self._decode = decode  # token ids -> their text
        self._pending: list[Entry] = []  # the entries of tokens that showed nothing yet
        self._last = _TEXT  # what the last output that showed something made (text also before any)
        self.written: list[Entry] | None = [] if calls else None

    def take(self, d: ChoiceDelta) -> ChoiceDelta:
        """`d`, one output's delta, with only its text's logprob entries."""
        if not (d.content or d.reasoning or d.tool_calls):
            if d.logprobs:
                self._pending += d.logprobs
                d.logprobs = []
            return d
        entries = self._pending + d.logprobs if self._pending else d.logprobs
        self._pending = []
        made = _REASONING if d.reasoning else _CALL
        if not d.content:
            text, markup, leading, self._last = [], entries, False, made
        elif d.reasoning or d.tool_calls:
            text, markup, leading = self._split(entries, d.content, both_ends=True)
            self._last = made if leading else _TEXT
        elif self._last == _TEXT:
            text, markup, leading = entries, [], False
        else:  # text after reasoning or a call: the held tokens are its own or their closing markup
            text, markup, leading = self._split(entries, d.content, both_ends=False)
            made, self._last = self._last, _TEXT
        if self.written is not None:
            kept = markup if made == _CALL else []
            self.written += text + kept if leading else kept + text
        d.logprobs = text
        return d

    def _split(self, entries: list[Entry], text: str, both_ends: bool) -> tuple[list[Entry], list[Entry], bool]:
        """(the entries of `text`, the others, whether the text's come first) of one output's tokens (and
        those held before them): the fewest last ones whose text ends with it, else (`both_ends`) the
        fewest first ones whose text begins with it, else the last ones as long as it."""
        ids = [e[0] for e in entries]
        k = _share(ids, text, self._decode, suffix=True)
        if k is None and both_ends and (k := _share(ids, text, self._decode, suffix=False)) is not None:
            return entries[:k], entries[k:], True
        if k is None:  # the text is not their text as it is (a stop string cut it): as many as make its length
            k = next((n for n in range(1, len(ids)) if len(self._decode(ids[-n:]).lstrip("\ufffd")) >= len(text)),
                     len(ids))
        return entries[len(ids) - k:], entries[:len(ids) - k], False

    def written_as(self, text: str, start: int = 0) -> list[Entry]:
        """The entries of `text`, what the model wrote for the tool parser from entry `start` of `written` on
        (a call that never became JSON, answered as its text): up to the last whose token ends that text (so
        not an end-of-sequence token after it)."""
        entries = (self.written or [])[start:] + self._pending
        if not text:
            return []
        ids, tail = [e[0] for e in entries], text[-_SLACK:]
        ends = (k for k in range(len(ids), max(0, len(ids) - _SLACK), -1) if self._decode(ids[:k]).endswith(tail))
        return entries[:next(ends, len(ids))]


def _share(ids: list[int], text: str, decode: Callable[[list[int]], str], suffix: bool) -> int | None:
    """How many of `ids`, the last ones (`suffix`) or the first, make `text`: the fewest whose text ends (or
    begins) with it; None when none do."""
    for k in range(1, len(ids) + 1):
        made = decode(ids[-k:] if suffix else ids[:k])
        if made.endswith(text) if suffix else made.startswith(text):
            return k
        if len(made) > len(text) + _SLACK:
            return None
    return None

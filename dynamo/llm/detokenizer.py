"""Incremental detokenization: streamed token ids -> newly completed text.

Owns turning each request's generated ids into text deltas whose concatenation equals
`tokenizer.decode(all_generated_ids)`. Uses a two-offset window over the ids
(prefix_offset..read_offset is already-emitted context, read_offset.. is pending) so each
step decodes only a few tokens, whatever the sequence length. Text whose decoded tail is
U+FFFD (an incomplete UTF-8 character split across byte-level tokens) is held back until
the character completes.
"""

from __future__ import annotations

from tokenizers import decoders

from dynamo.llm.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
# Prompt tokens kept as left context so tokenizers that strip a leading space at the
# start of a decode (SentencePiece-style) still produce the right first delta.
PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    __slots__ = ("_decode", "_skip", "_concat", "_ids", "_prefix_offset", "_read_offset", "_prefix_text")

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int] | None = None,
                 skip_special_tokens: bool = True):
        self._decode = tokenizer.backend.decode
        self._skip = skip_special_tokens
        self._concat = isinstance(tokenizer.backend.decoder, decoders.ByteLevel)
        context = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:]) if prompt_ids else []
        text = self._decode(context, skip_special_tokens=skip_special_tokens) if context else ""
        if text.endswith(REPLACEMENT):  # prompt ends mid-character: its tail is no clean context
            context, text = [], ""
        self._ids = context
        self._prefix_offset = 0
        self._read_offset = len(context)
        self._prefix_text = text

    def add(self, new_ids: list[int]) -> str:
        """Appends generated ids; returns the text they complete (possibly "")."""
        if not new_ids:
            return ""
        ids = self._ids
        ids.extend(new_ids)
        text = self._decode(ids[self._prefix_offset:], skip_special_tokens=self._skip)
        if not text.endswith(REPLACEMENT):
            return self._advance(text)
        if len(new_ids) == 1:
            return ""
        # Several ids ending mid-character: step through them so the complete part is emitted
        # now and the window cannot grow without bound.
        del ids[len(ids) - len(new_ids):]
        return "".join([self._step(i) for i in new_ids])

    def _step(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids[self._prefix_offset:], skip_special_tokens=self._skip)
        return "" if text.endswith(REPLACEMENT) else self._advance(text)

    def _advance(self, text: str) -> str:
        delta = text[len(self._prefix_text):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        # The new prefix window ids[old read_offset:] decodes to exactly `delta` when decoding
        # is concatenative (byte-level BPE); otherwise (e.g. SentencePiece strips a leading
        # space at the start of a decode) decode it for real.
        self._prefix_text = delta if self._concat else self._decode(
            self._ids[self._prefix_offset:], skip_special_tokens=self._skip)
        if self._prefix_offset > 64:
            self._trim()
        return delta

    def _trim(self) -> None:
        # Drop ids left of the window so memory stays O(window) too.
        del self._ids[:self._prefix_offset]
        self._read_offset -= self._prefix_offset
        self._prefix_offset = 0

    def flush(self) -> str:
        """Returns whatever is still held back (e.g. a trailing incomplete character)."""
        if self._read_offset >= len(self._ids):
            return ""
        text = self._decode(self._ids[self._prefix_offset:], skip_special_tokens=self._skip)
        delta = text[len(self._prefix_text):]
        self._prefix_offset = self._read_offset = len(self._ids)
        self._prefix_text = ""
        return delta

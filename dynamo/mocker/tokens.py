"""Deterministic fake sampling: real vocabulary ids from a 64-bit LCG.

The stream depends only on the seed (the request's `sampling_options.seed`, else a
hash of the prompt), never yields a forbidden id (special tokens, eos, hidden stop
ids) so the mocker runs to max_tokens and clients always see decodable text.
"""

from __future__ import annotations

from array import array
from typing import Iterable

import xxhash

MASK64 = (1 << 64) - 1
LCG_MUL = 6364136223846793005  # Knuth's MMIX constants
LCG_INC = 1442695040888963407
_MAX_REDRAWS = 32


def seed_for(prompt: list[int], seed: int | None) -> int:
    """LCG start state: the explicit seed, else derived from the prompt's tokens."""
    if seed is not None:
        return (seed * 0x9E3779B97F4A7C15 + 1) & MASK64
    return xxhash.xxh3_64_intdigest(array("I", prompt).tobytes())


def fragment_ids(tokenizer) -> frozenset[int]:
    """Ids whose text alone is an incomplete character (byte-level or byte-fallback pieces of a
    multi-byte UTF-8 character). A model writing ordinary text emits them only as runs that
    complete a character; drawn at random, such a token decodes to nothing until more bytes
    arrive, so about one stream in thirty would show its first text a step late."""
    size = tokenizer.vocab_size
    texts = tokenizer.backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    return frozenset(i for i, text in enumerate(texts) if "\ufffd" in text)


class TokenSampler:
    """Vocabulary range plus the ids a sequence must never produce."""

    __slots__ = ("vocab_size", "forbidden", "_fallback")

    def __init__(self, vocab_size: int, forbidden: Iterable[int] = ()) -> None:
        if vocab_size <= 0:
            raise ValueError("vocab_size must be > 0")
        self.vocab_size = vocab_size
        self.forbidden = frozenset(forbidden)
        self._fallback = next((i for i in range(vocab_size) if i not in self.forbidden), None)
        if self._fallback is None:
            raise ValueError("every id of the vocabulary is special: nothing to sample")

    def with_extra(self, extra: Iterable[int] | None) -> "TokenSampler":
        """A sampler that also avoids `extra` (per-request eos / hidden stop ids)."""
        extra = frozenset(extra or ())
        if extra <= self.forbidden:
            return self
        return TokenSampler(self.vocab_size, self.forbidden | extra)

    def redraw(self, state: int) -> tuple[int, int]:
        """Slow path after a forbidden draw: keep stepping, then fall back to a fixed id."""
        vocab, forbidden = self.vocab_size, self.forbidden
        for _ in range(_MAX_REDRAWS):
            state = (state * LCG_MUL + LCG_INC) & MASK64
            token = (state >> 33) % vocab
            if token not in forbidden:
                return state, token
        return state, self._fallback  # type: ignore[return-value]

    def next(self, state: int) -> tuple[int, int]:
        """(new state, token id). The scheduler inlines this on its hot path."""
        state = (state * LCG_MUL + LCG_INC) & MASK64
        token = (state >> 33) % self.vocab_size
        if token in self.forbidden:
            return self.redraw(state)
        return state, token


def fake_logprobs(tokens: list[int], position: int, top: int,
                  sampler: TokenSampler) -> tuple[list[float], list[list[tuple[int, float]]] | None]:
    """Well-formed, deterministic logprobs for sampled `tokens` (the first at output
    `position`): each sampled token is the most likely (logprob in (-0.5, 0]), and the
    `top` alternatives are distinct allowed ids with strictly decreasing logprobs, so
    the logprobs path is testable without a real model."""
    logprobs: list[float] = []
    tops: list[list[tuple[int, float]]] = []
    vocab, forbidden = sampler.vocab_size, sampler.forbidden
    for offset, token in enumerate(tokens):
        h = xxhash.xxh3_64_intdigest(array("I", (token, position + offset)).tobytes())
        lp = -((h % 500) + 1) / 1000.0
        logprobs.append(lp)
        if top:
            alts: list[tuple[int, float]] = [(token, lp)]
            candidate = token
            while len(alts) < top:
                candidate = (candidate + 7919) % vocab
                if candidate not in forbidden and all(candidate != a for a, _ in alts):
                    alts.append((candidate, lp - 0.75 * len(alts)))
            tops.append(alts)
    return logprobs, (tops if top else None)

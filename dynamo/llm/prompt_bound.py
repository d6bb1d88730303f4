"""A cheap lower bound on how many tokens a text needs, so that a prompt that can never
fit the context is refused from its length alone, before templating or tokenization
(tokenizing a 12 MB prompt costs seconds and a gigabyte of memory).

The bound: every token covers at most `max_chars` characters of the normalized text,
where `max_chars` is the longest vocabulary or added-token string (byte-level BPE
stores one character per byte, so this also bounds characters). A normalizer may
shrink the text before that: Unicode composition at most ~3:1 (hence the slack); a
normalizer that can delete characters outright (BERT cleaning, Strip, StripAccents,
SentencePiece's precompiled map, a shortening Replace) makes any length bound
unsound, so then there is no bound and the caller tokenizes (off the event loop).
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

# Normalizers that never delete characters; the NF forms may compose up to ~3 chars into 1.
_KEEPS_LENGTH = {"Lowercase", "Prepend", "Nmt"}
_COMPOSES = {"NFC", "NFKC", "NFD", "NFKD"}
_COMPOSE_SLACK = 4


def _normalizer_slack(spec: dict | None) -> int | None:
    """How many normalized characters one original character may shrink to, inverted:
    1 when the normalizer never shrinks text; None when it may delete characters."""
    if not spec:
        return 1
    kind = spec.get("type")
    if kind == "Sequence":
        slack = 1
        for inner in spec.get("normalizers", []):
            one = _normalizer_slack(inner)
            if one is None:
                return None
            slack = max(slack, one)
        return slack
    if kind in _KEEPS_LENGTH:
        return 1
    if kind in _COMPOSES:
        return _COMPOSE_SLACK
    if kind == "Replace":
        pattern = spec.get("pattern", {})
        literal = pattern.get("String") if isinstance(pattern, dict) else None
        content = spec.get("content", "")
        if literal is not None and len(content) >= len(literal):
            return 1
    return None


class PromptBound:
    """`min_tokens(n_chars)`: a proven lower bound on the token count of any text of that
    many characters (0 when no sound bound exists for this tokenizer)."""

    def __init__(self, max_chars: int, slack: int | None, byte_level: bool = False) -> None:
        self.max_chars = max(1, max_chars)
        self.slack = slack
        # Byte-level vocabularies spell each byte as one character, so `max_chars` bounds UTF-8
        # bytes too; otherwise one character may be up to 4 bytes.
        self.bytes_per_char = 1 if byte_level else 4

    @classmethod
    def from_backend(cls, backend) -> PromptBound:
        """Build from a `tokenizers.Tokenizer`: one pass over the vocabulary at load time."""
        try:
            spec = json.loads(backend.to_str())
        except Exception:  # a tokenizer we cannot introspect gets no bound
            return cls(1, None)
        slack = _normalizer_slack(spec.get("normalizer"))
        model = spec.get("model", {})
        vocab = backend.get_vocab(with_added_tokens=True)
        max_chars = max((len(t) for t in vocab), default=1)
        if model.get("type") == "WordPiece":  # a whole over-long word becomes one [UNK]
            max_chars = max(max_chars, int(model.get("max_input_chars_per_word", 100)))
        # WordLevel maps a whole word, and fused unknowns map a whole run, to one token.
        fused_unknowns = model.get("fuse_unk") and not model.get("byte_fallback")
        if model.get("type") not in ("BPE", "WordPiece") or fused_unknowns:
            slack = None
        byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or \
            (spec.get("decoder") or {}).get("type") == "ByteLevel"
        return cls(max_chars, slack, byte_level)

    def min_tokens(self, n_chars: int) -> int:
        if self.slack is None:
            return 0
        return n_chars // (self.max_chars * self.slack)

    def min_tokens_from_bytes(self, n_utf8_bytes: int) -> int:
        """The same bound from the text's UTF-8 size (known before the JSON string is decoded)."""
        if self.slack is None:
            return 0
        return n_utf8_bytes // self._bytes_per_token()

    def bytes_for_tokens(self, n_tokens: int) -> int:
        """The UTF-8 size from which `min_tokens_from_bytes` reaches `n_tokens` (huge when unbounded)."""
        if self.slack is None:
            return 1 << 62
        return n_tokens * self._bytes_per_token()

    def _bytes_per_token(self) -> int:
        return self.max_chars * (self.slack or 1) * self.bytes_per_char

"""How a cross-encoder reads a (query, document) pair: the card's `rerank` entry, written by a worker
that serves one (from its engine's model config), and the token ids the frontend builds from it for
`/v1/rerank`. The rule is vLLM's: with a separator (the default) the tokenizer's own pair template
(`[CLS] query [SEP] document [SEP]` for BERT, `<s> query </s></s> document </s>` for XLM-R); without
one (an LLM converted to a reranker, `use_sep_token: false` in its config) the query and the document
as one text. Segment ids go along only for a model whose tokenizer returns them (BERT's do): all-zero
ids are what the engine assumes without them."""

from __future__ import annotations

from typing import Any

import msgspec

RERANK_KEY = "rerank"  # the card's runtime_data entry: a PairFormat, present when a worker cross-encodes


class PairFormat(msgspec.Struct, frozen=True, kw_only=True):
    separator: bool = True  # the tokenizer's pair template; False: query + document as one text
    token_type_ids: bool = False  # the model reads segment ids: they go with the tokens

    def to_card(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_card(cls, runtime_data: dict[str, Any]) -> PairFormat | None:
        """The format a card declares; None when its workers do not cross-encode (or a newer worker wrote
        something this frontend cannot read: it then serves no cross-encoding rather than a wrong one)."""
        data = runtime_data.get(RERANK_KEY)
        if not isinstance(data, dict):
            return None
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError:
            return None


class PairTokens(msgspec.Struct, frozen=True):
    ids: list[int]
    type_ids: list[int] | None  # segment ids (0: query, 1: document), when the format sends them


def pair_tokens(tokenizer: Any, pairs: list[tuple[str, str]], fmt: PairFormat) -> list[PairTokens]:
    """The prompt each (query, document) pair is scored on, in order. `tokenizer` is dynamo.llm.tokenizer's:
    its backend applies the tokenizer.json's post-processor (a pair's special tokens and segments) and
    tokenizes the batch in parallel without holding the GIL."""
    backend = tokenizer.backend
    if not fmt.separator:
        return [PairTokens(list(e.ids), None)
                for e in backend.encode_batch([q + d for q, d in pairs], add_special_tokens=True)]
    out = []
    for enc in backend.encode_batch(list(pairs), add_special_tokens=True):
        types = list(enc.type_ids) if fmt.token_type_ids and any(enc.type_ids) else None
        out.append(PairTokens(list(enc.ids), types))
    return out


def first_document_token(type_ids: list[int]) -> int:
    """Where the document's segment starts (the engine's compressed form of segment ids: zeros, then
    ones); ValueError for ids of any other shape."""
    start = len(type_ids)
    for i, kind in enumerate(type_ids):
        if kind not in (0, 1) or (kind == 0 and start < i):
            raise ValueError("segment ids must be zeros followed by ones")
        if kind == 1 and start > i:
            start = i
    return start


def truncate_to_tokens(tokenizer: Any, text: str, limit: int) -> str:
    """`text` cut to at most `limit` tokens (no special tokens counted) at a token boundary of the text
    itself, as vLLM's scoring cuts a query or document (`max_tokens_per_query` / `max_tokens_per_doc`):
    cut where token `limit` begins, then tokenize the rest again until it fits (a cut can change how
    the end of the text merges)."""
    backend = tokenizer.backend
    while text:
        enc = backend.encode(text, add_special_tokens=False)
        if len(enc.ids) <= limit:
            break
        end = min(enc.offsets[limit - 1][1], enc.offsets[limit][0]) if limit > 0 else 0
        text = text[:min(end, len(text) - 1)]
    return text

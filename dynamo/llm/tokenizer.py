"""Tokenizer for a HF-format model directory, wrapping `tokenizers.Tokenizer` directly.

Owns text <-> token-id conversion and the special-token facts the preprocessor needs
(BOS/EOS strings, every id that ends generation, the set of special ids). Reads
`tokenizer.json` plus, when present, `tokenizer_config.json`, `generation_config.json`
and `config.json`; transformers is never imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer


_GIL_FREE_CHARS = 4096


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def token_content(value) -> str | None:
    """tokenizer_config stores special tokens as a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


@dataclass
class EncodeCost:
    """What encoding a text would cost now: the characters to tokenize, and the pieces another
    thread is tokenizing for a cache (keys the encoder would wait for; see token_cache)."""

    new_chars: int
    pending: list[tuple[int, str]] = field(default_factory=list)


class Tokenizer:
    def __init__(self, tokenizer: _HFTokenizer, tokenizer_config: dict | None = None,
                 generation_config: dict | None = None, model_config: dict | None = None):
        self._tok = tokenizer
        cfg = tokenizer_config or {}
        self.config = cfg
        self.bos_token = token_content(cfg.get("bos_token"))
        self.eos_token = token_content(cfg.get("eos_token"))
        self.pad_token = token_content(cfg.get("pad_token"))
        self.unk_token = token_content(cfg.get("unk_token"))
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, t in added.items() if t.special)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_token_ids = self._collect_eos(generation_config or {}, model_config or {})
        self.bos_token_id = self.token_to_id(self.bos_token) if self.bos_token else None

    @classmethod
    def from_dir(cls, path) -> Tokenizer:
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"{tok_file} not found: only fast (tokenizer.json) tokenizers are supported")
        return cls(
            _HFTokenizer.from_file(str(tok_file)),
            _read_json(path / "tokenizer_config.json"),
            _read_json(path / "generation_config.json"),
            _read_json(path / "config.json"),
        )

    def _collect_eos(self, gen_cfg: dict, model_cfg: dict) -> list[int]:
        ids: list[int] = []
        if self.eos_token is not None and (i := self.token_to_id(self.eos_token)) is not None:
            ids.append(i)
        ids += _as_id_list(gen_cfg.get("eos_token_id"))
        ids += _as_id_list(model_cfg.get("eos_token_id"))
        return list(dict.fromkeys(ids))  # dedupe, keep order

    @property
    def backend(self) -> _HFTokenizer:
        return self._tok

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_cost(self, text: str) -> EncodeCost:
        """What encoding `text` costs: all of it, nothing is cached here."""
        return EncodeCost(len(text))

    def when_released(self, key, callback) -> bool:
        return False  # nothing is ever being tokenized for a cache here

    def encode_capped(self, text: str, cap: int) -> tuple[int, list[int] | None]:
        """(token count, ids), ids None when the count reaches `cap`: a prompt that cannot fit
        never becomes a Python list. Long texts go through `encode_batch`, which releases the
        GIL while the Rust side works, so a caller thread does not hold up the event loop."""
        if len(text) < _GIL_FREE_CHARS:
            ids = self._tok.encode(text, add_special_tokens=False).ids
            return len(ids), (ids if len(ids) < cap else None)
        encoding = self._tok.encode_batch([text], add_special_tokens=False)[0]
        count = len(encoding)
        return count, (encoding.ids if count < cap else None)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids if isinstance(ids, list) else list(ids),
                                skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str | None]:
        id_to_token = self._tok.id_to_token
        return [id_to_token(i) for i in ids]

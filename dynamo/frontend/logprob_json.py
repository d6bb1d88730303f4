"""Chat `logprobs.content` as the encoder's structs: the document `sse.chat_logprobs` describes with dicts
({"token", "logprob", "bytes", "top_logprobs"}), byte for byte, at a third of the cost. A request with
`top_logprobs` 20 makes 21 entries per token, so this is most of the work of its answer: each token's
text and UTF-8 bytes are looked up once per request, and no dict is built per entry."""

from __future__ import annotations

from typing import Callable, Iterable

import msgspec


class TopLogprob(msgspec.Struct, gc=False):
    token: str
    logprob: float
    bytes_: list[int] = msgspec.field(name="bytes")


class TokenLogprob(msgspec.Struct, gc=False):
    token: str
    logprob: float
    bytes_: list[int] = msgspec.field(name="bytes")
    top_logprobs: list[TopLogprob] = msgspec.field(default_factory=list)


Entry = tuple[int, float, list[tuple[int, float]] | None]  # (token id, logprob, top [(id, logprob)])


class ChatLogprobs:
    """One request's chat logprobs; `token_text(id)` names a token as the client sees it."""

    __slots__ = ("_token_text", "_known")

    def __init__(self, token_text: Callable[[int], str]) -> None:
        self._token_text = token_text
        self._known: dict[int, tuple[str, list[int]]] = {}  # token id -> (text, its UTF-8 bytes)

    def _named(self, token_id: int) -> tuple[str, list[int]]:
        known = self._known.get(token_id)
        if known is None:
            text = self._token_text(token_id)
            known = self._known[token_id] = (text, list(text.encode("utf-8")))
        return known

    def content(self, entries: Iterable[Entry]) -> list[TokenLogprob]:
        """The `content` list of these entries (encode it, or put it in a dict as `sse.chat_logprobs` does)."""
        named = self._named
        out = []
        for token_id, logprob, top in entries:
            text, raw = named(token_id)
            tops = [TopLogprob((n := named(t))[0], lp, n[1]) for t, lp in top] if top else []
            out.append(TokenLogprob(text, logprob, raw, tops))
        return out

    def __call__(self, entries: Iterable[Entry]) -> dict:
        """`logprobs` of a chat choice or chunk: {"content": [...]}."""
        return {"content": self.content(entries)}

"""Tokenization of prompts that repeat, piece by piece (the frontend's tokenizer cache, NVIDIA
Dynamo's `DYN_TOKENIZER_CACHE_BYTES`): agent and chat traffic resends the same system prompt, tool
definitions and history on every turn, and a rendered prompt of a few thousand tokens costs
milliseconds of tokenizer time on each one.

A fast tokenizer splits its input on its special added tokens (`<|im_start|>`, `<|eot_id|>`, ...)
before anything else, and tokenizes the text between them independently. So a rendered chat prompt,
cut right after each such token, tokenizes to the concatenation of its pieces' tokens: pieces seen
before (the system turn, earlier turns) come from the cache, only new ones are tokenized, together in
one GIL-free batch. A piece that another prep thread is tokenizing right now is waited for rather than
tokenized twice: a burst of agents starting at once on the same long system prompt tokenizes it once.
Where that independence does not hold for a model's tokenizer (a pre-tokenizer
that treats the first piece apart, a marker that strips its neighbours' spaces), the encoder finds
out from a probe when it is built and from its first real prompts, each tokenized both ways, and
then tokenizes whole strings only.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from array import array
from collections import OrderedDict
from typing import Callable

from dynamo.llm.tokenizer import EncodeCost, Tokenizer

MIN_CACHED_CHARS = 64  # shorter pieces cost less to tokenize than to look up and keep
ENTRY_OVERHEAD = 120  # bytes an entry costs beyond its text and ids (the key's object, the array, the link)
CHECKED_PROMPTS = 2  # real prompts tokenized both ways before the pieces are trusted alone (the probe came first)
BATCH_CHARS = 4096  # less new text than this is tokenized piece by piece, holding the GIL briefly
PENDING_WAIT_SECS = 5.0  # far longer than any piece takes to tokenize; past it, the waiter tokenizes it itself
HELD, PENDING, ABSENT = range(3)  # a piece's state in the cache
_encoder_ids = itertools.count(1)  # an encoder's key prefix in the shared cache (never reused, unlike id())


class TokenCache:
    """Piece text -> token ids, least recently used out first past `budget_bytes`; shared by every
    model's encoder (keys carry the tokenizer's identity) and safe across the prep threads."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple[int, str], array] = OrderedDict()
        self._pending: dict[tuple[int, str], threading.Event] = {}  # pieces a thread is tokenizing now
        self._on_release: dict[tuple[int, str], list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[int, str]) -> array | None:
        with self._lock:
            ids = self._hit(key)
            if ids is None:
                self.misses += 1
            return ids

    def state(self, key: tuple[int, str]) -> int:
        """HELD, PENDING (a thread is tokenizing it) or ABSENT: a peek, neither counted nor moved up."""
        with self._lock:
            return HELD if key in self._entries else PENDING if key in self._pending else ABSENT

    def when_released(self, key: tuple[int, str], callback: Callable[[], None]) -> bool:
        """Have `callback` called, on the tokenizing thread, once the piece being tokenized is done
        (stored or not); False, and no call, when nobody is tokenizing it."""
        with self._lock:
            if key not in self._pending:
                return False
            self._on_release.setdefault(key, []).append(callback)
            return True

    def claim(self, key: tuple[int, str]) -> array | threading.Event | None:
        """The piece's cached ids; or, while another thread tokenizes it, the event set when it is done;
        or None: the caller tokenizes it and then must `put` or `release` it."""
        with self._lock:
            ids = self._hit(key)
            if ids is not None:
                return ids
            pending = self._pending.get(key)
            if pending is None:
                self.misses += 1
                self._pending[key] = threading.Event()
            return pending

    def _hit(self, key: tuple[int, str]) -> array | None:
        """The cached ids, moved up and counted as a hit (the lock is held)."""
        ids = self._entries.get(key)
        if ids is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return ids

    def release(self, key: tuple[int, str]) -> None:
        """End a claim (whether or not the piece was stored): its waiters look again."""
        with self._lock:
            pending = self._pending.pop(key, None)
            callbacks = self._on_release.pop(key, ())
        if pending is not None:
            pending.set()
        for callback in callbacks:
            callback()

    def put(self, key: tuple[int, str], ids: list[int]) -> None:
        value = array("I", ids)
        size = _size(key[1], value)
        if size > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= _size(key[1], old)
            self._entries[key] = value
            self.bytes += size
            while self.bytes > self.budget:
                gone_key, gone = self._entries.popitem(last=False)
                self.bytes -= _size(gone_key[1], gone)


def _size(text: str, ids: array) -> int:
    return len(text) + ids.itemsize * len(ids) + ENTRY_OVERHEAD


class SegmentedEncoder:
    """`encode_capped` as the tokenizer's, with repeated pieces of the prompt from `cache`."""

    def __init__(self, tokenizer: Tokenizer, cache: TokenCache, probe: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.cache = cache
        self._owner = next(_encoder_ids)
        markers = [t.content for t in tokenizer.backend.get_added_tokens_decoder().values()
                   if t.special and not (t.normalized or t.lstrip or t.rstrip or t.single_word) and t.content]
        self._split = re.compile("|".join(map(re.escape, sorted(markers, key=len, reverse=True)))) if markers else None
        self.trusted = (self._split is not None and not _treats_first_piece_apart(tokenizer)
                        and (probe is None or self._agrees(probe)))
        self._left_to_check = CHECKED_PROMPTS

    def pieces(self, text: str) -> list[str]:
        """`text` cut right after each special marker: the pieces the tokenizer handles independently."""
        if self._split is None:
            return [text]
        out, start = [], 0
        for match in self._split.finditer(text):
            out.append(text[start:match.end()])
            start = match.end()
        if start < len(text):
            out.append(text[start:])
        return out

    def encode_cost(self, text: str) -> EncodeCost:
        """What `encode_capped(text)` would tokenize now: the characters of pieces neither cached nor
        being tokenized by another thread (short pieces, which skip the cache, included), and the
        pieces that are (their keys, for `when_released`)."""
        if not self.trusted or self._left_to_check > 0 or len(text) < MIN_CACHED_CHARS:
            return EncodeCost(len(text))
        state, owner = self.cache.state, self._owner
        cost = EncodeCost(0)
        for piece in self.pieces(text):
            found = ABSENT if len(piece) < MIN_CACHED_CHARS else state((owner, piece))
            if found == ABSENT:
                cost.new_chars += len(piece)
            elif found == PENDING:
                cost.pending.append((owner, piece))
        return cost

    def when_released(self, key: tuple[int, str], callback: Callable[[], None]) -> bool:
        return self.cache.when_released(key, callback)

    def encode_capped(self, text: str, cap: int) -> tuple[int, list[int] | None]:
        """(token count, ids), ids None when the count reaches `cap`."""
        if not self.trusted or len(text) < MIN_CACHED_CHARS:
            return self.tokenizer.encode_capped(text, cap)
        ids = self._encode_pieces(self.pieces(text))
        if self._left_to_check > 0:  # the first real prompts also go whole: pieces must agree exactly
            self._left_to_check -= 1
            whole = self.tokenizer.encode(text)
            if whole != ids:
                self.trusted = False
                ids = whole
        return len(ids), (ids if len(ids) < cap else None)

    def _encode_pieces(self, pieces: list[str]) -> list[int]:
        """The pieces' ids in order: cached ones looked up, the rest tokenized in one batch (runs of
        short pieces joined, since a run is itself independent of its neighbours), and pieces another
        thread is tokenizing taken from it once this thread's own are stored (so no two threads ever
        wait on each other)."""
        parts: list[array | int | tuple[str, threading.Event]] = []  # ids, an index into `todo`, or a wait
        todo: list[str] = []
        claimed: list[str] = []  # pieces this thread tokenizes for the cache
        run: list[str] = []

        def tokenize(text: str) -> None:
            parts.append(len(todo))
            todo.append(text)

        for piece in pieces:
            if len(piece) < MIN_CACHED_CHARS:
                run.append(piece)
                continue
            if run:
                tokenize("".join(run))
                run.clear()
            found = self.cache.claim((self._owner, piece))
            if found is None:
                tokenize(piece)
                claimed.append(piece)
            else:
                parts.append(found if isinstance(found, array) else (piece, found))
        if run:
            tokenize("".join(run))
        fresh = self._tokenize_claimed(todo, claimed)
        out: list[int] = []
        for part in parts:
            if isinstance(part, int):
                out.extend(fresh[part])
            else:
                out.extend(self._awaited(*part) if isinstance(part, tuple) else part)
        return out

    def _tokenize_claimed(self, todo: list[str], claimed: list[str]) -> list[list[int]]:
        """`todo` tokenized; the claimed pieces among them stored, and every claim released even on failure."""
        try:
            fresh = self._encode_texts(todo)
            mine = set(claimed)
            for text, ids in zip(todo, fresh):
                if text in mine:
                    self.cache.put((self._owner, text), ids)
            return fresh
        finally:
            for piece in claimed:
                self.cache.release((self._owner, piece))

    def _awaited(self, piece: str, pending: threading.Event) -> list[int] | array:
        """A piece another thread was tokenizing: its ids from the cache once stored, else tokenized here."""
        pending.wait(PENDING_WAIT_SECS)
        ids = self.cache.get((self._owner, piece))
        return ids if ids is not None else self.tokenizer.encode(piece)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """A batch releases the GIL while the Rust side works, but starting one costs more than a few
        short pieces take to tokenize one by one."""
        if sum(map(len, texts)) < BATCH_CHARS:
            return [self.tokenizer.encode(text) for text in texts]
        return self.tokenizer.encode_batch(texts)

    def _agrees(self, probe: str) -> bool:
        return self._encode_pieces(self.pieces(probe)) == self.tokenizer.encode(probe)


def _treats_first_piece_apart(tokenizer: Tokenizer) -> bool:
    """A Metaspace pre-tokenizer with `prepend_scheme: first` marks only the string's first piece, so
    a piece tokenized on its own would be marked as if it came first."""
    def walk(node) -> bool:
        if isinstance(node, dict):
            return node.get("prepend_scheme") == "first" or any(walk(v) for v in node.values())
        return isinstance(node, list) and any(walk(v) for v in node)
    return walk(json.loads(tokenizer.backend.to_str()).get("pre_tokenizer"))

"""A large unary answer's JSON body, encoded and sent a piece at a time (chunked transfer encoding).

`n` 128 x 2,000 tokens x `top_logprobs` 20 is ~5 M logprob entries, ~350 MB of JSON: built whole it
held the interpreter for seconds and the memory of every entry as a dict plus the body. Here each piece
is a slice of one choice's logprobs (about `PIECE_ENTRIES` entries, a millisecond or two of encoding),
the event loop runs other requests between pieces, a piece goes out once the client has taken the one
before (the ASGI server's flow control), and a choice's collected logprobs are let go once it is sent.
The document is the one `sse.chat_body` / `sse.completion_body` would encode, byte for byte.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Callable, Iterable, Iterator

import msgspec

from dynamo.frontend.logprob_json import ChatLogprobs
from dynamo.frontend.sse import completion_logprobs
from dynamo.runtime.asgi import JSON_HEADERS

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder().encode

PIECE_ENTRIES = 4096  # logprob entries encoded per piece
SEND_BYTES = 256 * 1024  # pieces are sent once this much is ready (fewer, larger writes)

Choice = tuple[dict, list]  # (the choice's JSON fields, "logprobs" among them as a placeholder; its entries)


def body(envelope: dict, choices: Iterable[Iterator[bytes]], tail: dict) -> Iterator[bytes]:
    """{**envelope, "choices": [...], **tail}, each choice given as its pieces."""
    yield _json(envelope)[:-1] + b',"choices":['
    for i, pieces in enumerate(choices):
        if i:
            yield b","
        yield from pieces
    yield b"]," + _json(tail)[1:] if tail else b"]}"


def chat_choice(choice: Choice, logprobs: ChatLogprobs, per_token: int) -> Iterator[bytes]:
    """A chat choice with `logprobs.content` a slice at a time; its entries are cleared once encoded."""
    fields, entries = choice
    head, tail = _around(fields, "logprobs")
    yield head + b'{"content":['
    step = max(1, PIECE_ENTRIES // per_token)
    for start in range(0, len(entries), step):
        piece = _json(logprobs.content(entries[start:start + step]))[1:-1]
        yield piece if start == 0 else b"," + piece
    entries.clear()
    yield b"]}" + tail


COMPLETION_COLUMNS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def completion_choice(choice: Choice, token_text: Callable[[int], str], per_token: int) -> Iterator[bytes]:
    """A completion choice: its logprobs are columns, so every slice is encoded before the first column
    goes out (a step per slice: b"" pieces), then the columns; its entries are cleared once encoded."""
    fields, entries = choice
    head, tail = _around(fields, "logprobs")
    columns: dict[str, list[bytes]] = {name: [] for name in COMPLETION_COLUMNS}
    step, offset = max(1, PIECE_ENTRIES // per_token), 0
    for start in range(0, len(entries), step):
        lp = completion_logprobs(entries[start:start + step], token_text, offset)
        offset += sum(map(len, lp["tokens"]))
        for name in COMPLETION_COLUMNS:
            columns[name].append(_json(lp[name])[1:-1])
        yield b""
    entries.clear()
    yield head + b"{" + b",".join(_json(name) + b":[" + b",".join(parts) + b"]"
                                  for name, parts in columns.items()) + b"}" + tail


def _around(fields: dict, key: str) -> tuple[bytes, bytes]:
    """`fields` encoded in two halves, around the value of `key` (one of them)."""
    keys = list(fields)
    at = keys.index(key)
    before = _json({k: fields[k] for k in keys[:at]})[:-1]
    after = _json({k: fields[k] for k in keys[at + 1:]})[1:]
    return before + (b"," if at else b"") + _json(key) + b":", (b"," if at + 1 < len(keys) else b"") + after


async def send_body(send: Callable, pieces: Iterator[bytes], gone: Callable[[], bool]) -> bool:
    """Send the body as `pieces` come, the event loop free between them; False when the client left first
    (the rest is not built)."""
    await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
    ready: list[bytes] = []
    size = 0
    for piece in pieces:
        ready.append(piece)
        size += len(piece)
        if size >= SEND_BYTES:
            await send({"type": "http.response.body", "body": b"".join(ready), "more_body": True})
            ready, size = [], 0
        await asyncio.sleep(0)  # other requests' turn after each piece's encoding
        if gone():
            return False
    await send({"type": "http.response.body", "body": b"".join(ready), "more_body": False})
    return True


def give_back_later(trimmer) -> None:
    """After a large answer, its memory back to the OS once the request is over (a second later): a full
    collection, which also empties the interpreter's free lists (a few thousand tuples of the answer kept for
    reuse, spread over every arena the answer filled, would keep them all), then the heap trimmed (`trimmer`:
    a `memory.HeapTrimmer`). Several large answers in that second share one collection."""
    global _collection_due
    if not _collection_due:
        _collection_due = True
        asyncio.get_running_loop().call_later(1.0, _collect, trimmer)


_collection_due = False


def _collect(trimmer) -> None:
    global _collection_due
    _collection_due = False
    started = time.perf_counter()
    gc.collect()
    log.debug("full collection after a large answer: %.0f ms", (time.perf_counter() - started) * 1e3)
    trimmer.schedule()

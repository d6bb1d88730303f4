"""Request intake: a request's body, read under the frontend's body limit (`read_limited`, by
`runtime.asgi.read_body` without a second full-size copy; a 413 past it), and for big bodies,
refusing a prompt that cannot fit the model's context from the body's shape alone (each prompt of a batched
completion judged as one).

Decoding a 40 MB JSON body into Python strings holds the event loop (and the GIL) for
a few hundred milliseconds on a loaded 2-core machine. A body over `SHAPE_CHECK_BYTES`
is first scanned with its prompt strings left as raw JSON (`msgspec.Raw`, no string is
built): each raw string's length, less what its escapes can shrink, bounds the UTF-8
size of the prompt, and `PromptBound` turns that into a token count.
"""

from __future__ import annotations

import asyncio
import codecs
from typing import Callable, Iterator

import msgspec

from dynamo.frontend import errors
from dynamo.frontend.errors import ApiError, bad_request
from dynamo.llm.preprocessor import ContextOverflow
from dynamo.runtime.asgi import BodyTooLarge, header, read_body

SHAPE_CHECK_BYTES = 1 << 20
# An escape (`\n`, `\u00e9`, half a surrogate pair) is at most 6 bytes for at least 1 byte of text.
_ESCAPE_SHRINK = 5
_COUNT_SLICE = 1 << 20
UTF8_SLICE = 1 << 20


_NULL = msgspec.Raw(b"null")


class _Message(msgspec.Struct):
    role: str = ""
    content: msgspec.Raw = _NULL


class _Part(msgspec.Struct):
    type: str = ""
    text: msgspec.Raw = _NULL


_parts_decoder = msgspec.json.Decoder(list[_Part])
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class _ChatShape(msgspec.Struct):
    model: str = ""
    messages: list[_Message] = []


class _CompletionShape(msgspec.Struct):
    model: str = ""
    prompt: msgspec.Raw = _NULL


def _string_bytes(raw: msgspec.Raw) -> int:
    """Bytes between the quotes of a raw JSON string (0 for anything else)."""
    view = memoryview(raw)
    if len(view) < 2 or view[0] != 0x22:
        return 0
    return len(view) - 2


def _content_bytes(raw: msgspec.Raw) -> int:
    """A message content's text bytes as raw JSON: a string's, or the sum of its text parts' (a part list's
    texts stay raw; an image part's data is not text)."""
    view = memoryview(raw)
    if len(view) and view[0] == 0x5B:  # "[": content parts
        try:
            return sum(_string_bytes(part.text) for part in _parts_decoder.decode(raw) if part.type == "text")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return 0
    return _string_bytes(raw)


async def _backslashes_up_to(body: bytes | bytearray, cap: int) -> int:
    """Backslashes in `body`, counted a slice at a time with the loop free in between;
    stops once past `cap` (the count that would make the bound inconclusive)."""
    count = 0
    for start in range(0, len(body), _COUNT_SLICE):
        count += body.count(b"\\", start, start + _COUNT_SLICE)
        if count > cap:
            break
        await asyncio.sleep(0)
    return count


async def read_limited(scope: dict, receive: Callable, limit: int) -> bytes | bytearray:
    """The request's body; a 413 for one over `limit` bytes (declared so, or found so while read)."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise bad_request("invalid Content-Length header", None, "invalid_header") from None
        if declared > limit:
            raise errors.body_too_large(limit, declared)
    try:
        return await read_body(receive, limit)
    except BodyTooLarge:
        raise errors.body_too_large(limit) from None


async def early_refusal(body: bytes | bytearray, kind: str,
                        lookup: Callable[[str], object | None]) -> ApiError | None:
    """For a big body: the 400 a prompt that surely exceeds the context gets, else None (go on
    to the full decode, whose errors are the precise ones)."""
    if len(body) < SHAPE_CHECK_BYTES:
        return None
    try:
        if kind == "chat":
            shape = msgspec.json.decode(body, type=_ChatShape)
            raw = 0
            for message in shape.messages:
                if message.role == "user":
                    await asyncio.sleep(0)  # each pass over megabytes (an image's data) is its own stall
                    raw += _content_bytes(message.content)
            prompts, param = [raw], "messages"
        else:
            shape = msgspec.json.decode(body, type=_CompletionShape)
            prompts, param = _prompt_bytes(shape.prompt), "prompt"
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    pipeline = lookup(shape.model)
    if pipeline is None or not prompts or pipeline.bound.min_tokens_from_bytes(max(prompts)) < pipeline.context_length:
        return None
    # Every backslash in the body may start an escape that shrinks the text; count them
    # (without copying the body) only as far as it takes to know the bound still holds for the longest prompt.
    context = pipeline.context_length
    allowed = (max(prompts) - pipeline.bound.bytes_for_tokens(context)) // _ESCAPE_SHRINK
    escapes = await _backslashes_up_to(body, allowed)
    for i, raw in enumerate(prompts):  # each prompt of a batch judged as a single prompt is: the first over is named
        utf8 = max(0, raw - _ESCAPE_SHRINK * escapes)
        at_least = pipeline.bound.min_tokens_from_bytes(utf8)
        if at_least >= context:
            return _over_context(context, at_least, utf8, param, f"prompt[{i}]: " if len(prompts) > 1 else "")
    return None


def _prompt_bytes(raw: msgspec.Raw) -> list[int]:
    """A completion prompt's text bytes as raw JSON: a string's, or each string's of a list of strings (batched
    prompts); [] for token ids."""
    view = memoryview(raw)
    if len(view) < 2 or view[0] != 0x5B:  # not "[": a string, or nothing to judge
        return [_string_bytes(raw)]
    if bytes(view[1:64]).lstrip()[:1] != b'"':  # token ids: nothing to judge (and no Raw per id)
        return []
    try:
        return [_string_bytes(item) for item in _raw_list_decoder.decode(raw)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []


def _over_context(context: int, at_least: int, utf8: int, param: str, prefix: str) -> ApiError:
    error = bad_request(
        f"{prefix}This model's maximum context length is {context} tokens. However, your prompt is at least "
        f"{at_least} tokens long ({utf8} bytes of text or more), leaving no room for output.", param,
        "context_length_exceeded")
    error.overflow = ContextOverflow(at_least, context)
    return error


def utf8_slices(data: bytes | memoryview, size: int = UTF8_SLICE) -> Iterator[str]:
    """`data` decoded as UTF-8 a slice of `size` bytes at a time (a character cut by a slice's edge is held
    until the next); UnicodeDecodeError where it is not UTF-8. Between slices the caller lets other work run:
    one decode of a 150 MB body is a single C call that holds the GIL (and an event loop) throughout."""
    decoder, view = codecs.getincrementaldecoder("utf-8")(), memoryview(data)
    for start in range(0, len(view), size):
        yield decoder.decode(view[start:start + size])
    decoder.decode(b"", final=True)

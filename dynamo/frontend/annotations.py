"""`nvext.annotations` (NVIDIA Dynamo's request annotations): names a client lists to get extra
server-sent events, each framed as Dynamo frames an annotation, an `event:` line and the value's JSON
on a comment line:

    event: worker_instance_id
    : "7587888160958038784"

- `request_id`: a streamed answer opens with the request's id (its `x-dynamo-request-id`, or the one
  the frontend made, as the request's log lines name it), so a client can trace it from the start.
- `query_instance_id` (an inference gateway's first step): nothing is generated and nothing booked.
  The answer is the routing decision the frontend would make for this prompt now, and the prompt's
  token ids, for the gateway to send the request on with `nvext.backend_instance_id` (or the
  `x-worker-instance-id` header) and `nvext.token_data`. Its decode and prefill workers come from one worker set
  (`worker_sets.py`) and are of the card its prompt was tokenized for (else CardChanged: it is prepared again):
  - streamed, Dynamo's events: `worker_instance_id` (the decode worker's instance id, a decimal
    string) and `token_data`; with prefill workers, then a chunk with no choices whose `nvext`
    holds `worker_id: {prefill_worker_id, decode_worker_id}` and `token_ids`, the shape Dynamo's
    disaggregated query answers in; then `data: [DONE]`;
  - unary, one body with no choices and that `nvext`.

- `formatted_prompt` and `token_ids` (Dynamo's preprocessor annotations): a streamed answer opens
  with the prompt as the model got it, the chat rendered through its template (a completion's text
  prompt as sent), and its token ids. Each value is a JSON string on the comment line, the ids as
  the text of a JSON array inside it, as Dynamo writes them. They are sent only for a text prompt;
  `token_ids` not when the prompt came as `nvext.token_data` (the gateway that sent it has them).
  With batched prompts (`prompt_batch.py`) these two and `query_instance_id` are a 400: they name one prompt.

Names this version does not know are ignored, as Dynamo ignores them. A unary answer has no events.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from dynamo.frontend.dispatch import choose, refuse_worker_card
from dynamo.frontend.errors import bad_request
from dynamo.frontend.openai import ChatCompletionRequest
from dynamo.frontend.preparation import chat_text
from dynamo.frontend.sse import (DONE, SSE_HEADERS, ChatChunks, CompletionChunks, chat_body, completion_body,
                                 usage_dict)
from dynamo.frontend.worker_sets import Placement
from dynamo.router.policy import Role
from dynamo.runtime.asgi import send_bytes

PARAM = "nvext.annotations"
REQUEST_ID = "request_id"
QUERY_INSTANCE_ID = "query_instance_id"
FORMATTED_PROMPT = "formatted_prompt"
TOKEN_IDS = "token_ids"


def requested(nvext: dict[str, Any] | None) -> frozenset[str]:
    """The annotation names the request lists; a 400 for anything but a list of strings."""
    names = (nvext or {}).get("annotations")
    if names is None:
        return frozenset()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad_request(f"{PARAM} must be a list of names, e.g. [\"request_id\"]", PARAM, "invalid_type")
    return frozenset(names)


def event(name: str, value: Any) -> bytes:
    """One annotation as a server-sent event: the name, then the value's JSON as a comment line."""
    return b"event: " + name.encode() + b"\n: " + msgspec.json.encode(value) + b"\n\n"


def prompt_events(names: frozenset[str], pipeline, req, ids: list[int], tokenized_here: bool) -> bytes:
    """The `formatted_prompt` and `token_ids` events of a request's stream, for those of them it asks
    for; PreprocessError when its chat does not render."""
    if not req.stream or not names & {FORMATTED_PROMPT, TOKEN_IDS}:
        return b""
    if isinstance(req, ChatCompletionRequest):
        text = chat_text(pipeline, req)  # rendered again: only a request that asks pays for it
    elif isinstance(req.prompt_input(), str):
        text = req.prompt_input()
    else:
        return b""  # a token or batched prompt: nothing was formatted
    out = event(FORMATTED_PROMPT, text) if FORMATTED_PROMPT in names else b""
    if TOKEN_IDS in names and tokenized_here:
        out += event(TOKEN_IDS, msgspec.json.encode(ids).decode())
    return out


async def routed_workers(dispatcher, entry, request, card: str) -> tuple[int, int | None]:
    """The decode and prefill worker (None: the decode worker prefills) the request would go to now, both of one
    worker set (`worker_sets.py`, as `Dispatcher.stream` places it) and both of the card it was prepared for (a
    policy's query may await: the pools read may be of a card served since). The placement is not counted in the
    set metric: the gateway's request that follows, pinned to the decode worker, is."""
    placement = dispatcher.sets.place(entry, request, dispatcher.policy, count=False)
    pool = entry.pool(Role.DECODE)
    limit = dispatcher.sets.limit(entry, placement, pool, request, set(), probe=True)
    decode = (await choose(dispatcher.policy, pool, request, limit, book=False)).worker
    refuse_worker_card(entry, decode, card)
    if placement.namespace is not None:  # the decode worker's set, where a probe let it go to another
        placement = Placement(decode.endpoint.namespace)
    prefill = None if dispatcher.prefill is None else await dispatcher.prefill.query(entry, request, placement, card)
    return decode.instance_id, prefill


def routing_answer(decode_worker: int, token_ids: list[int]) -> bytes:
    """The events that answer a streamed `query_instance_id`, Dynamo's aggregated shape."""
    return event("worker_instance_id", str(decode_worker)) + event("token_data", token_ids)


def routing_nvext(decode_worker: int, prefill_worker: int | None, token_ids: list[int]) -> dict[str, Any]:
    """The response `nvext` that answers `query_instance_id` (Dynamo's disaggregated shape)."""
    workers = {"decode_worker_id": decode_worker}
    if prefill_worker is not None:
        workers = {"prefill_worker_id": prefill_worker, **workers}
    return {"worker_id": workers, "token_ids": token_ids}


async def answer_routing_query(dispatcher, entry, request, card: str, is_chat: bool, stream: bool, send) -> None:
    """`query_instance_id`: the workers this request would go to now; nothing is booked or
    generated. Routing failures (no worker, all busy) are the usual HTTP errors; a worker of another card than
    `card` (the one the request was prepared for) is CardChanged."""
    decode, prefill = await routed_workers(dispatcher, entry, request, card)
    ids = list(request.token_ids)
    nvext = routing_nvext(decode, prefill, ids)
    rid, created = request.request_id, int(time.time())
    if not stream:
        build = chat_body if is_chat else completion_body
        await send_bytes(send, 200, build(rid, entry.name, created, [], usage_dict(len(ids), 0, 0), nvext))
        return
    body = routing_answer(decode, ids)
    if prefill is not None:
        body += (ChatChunks if is_chat else CompletionChunks)(rid, entry.name, created).extension(nvext)
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": body + DONE, "more_body": False})

"""`nvext.annotations` (NVIDIA Dynamo's request annotations): names a client lists to get extra
server-sent events, each framed as Dynamo frames an annotation, an `event:` line and the value's JSON
on a comment line:

    event: worker_instance_id
    : "7587888160958038784"

- `request_id`: a streamed answer opens with the request's id (the `id` of its chunks), so a client
  can cancel or trace it before the first token.
- `query_instance_id`: nothing is generated. The answer is the routing decision the frontend would
  make for this prompt now, booked nowhere: `worker_instance_id` (the decode worker, its instance id
  as a decimal string), `prefill_worker_id` as well when prefill workers serve the model, then
  `token_data` (the prompt's token ids), then `data: [DONE]`. An inference gateway's endpoint picker
  asks this, then sends the request with `nvext.backend_instance_id` (and `token_data`) set. It is an
  event stream whether or not the request set `stream`: it is not a completion.

Names this version does not know are ignored, as Dynamo ignores them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dynamo.frontend.dispatch import choose
from dynamo.frontend.errors import bad_request
from dynamo.frontend.sse import DONE, SSE_HEADERS
from dynamo.router.policy import Role

PARAM = "nvext.annotations"
REQUEST_ID = "request_id"
QUERY_INSTANCE_ID = "query_instance_id"


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


def routing_answer(decode_worker: int, prefill_worker: int | None, token_ids: list[int]) -> bytes:
    """The events that answer `query_instance_id` (without the closing [DONE])."""
    body = event("worker_instance_id", str(decode_worker))
    if prefill_worker is not None:
        body += event("prefill_worker_id", str(prefill_worker))
    return body + event("token_data", token_ids)


async def answer_routing_query(dispatcher, entry, request, send) -> None:
    """`query_instance_id`: the workers this request would go to now, as events; nothing is booked
    or generated. Routing failures (no worker, all busy) are the usual HTTP errors."""
    decode = await choose(dispatcher.policy, entry.pool(Role.DECODE), request, set(), book=False)
    prefill = None if dispatcher.prefill is None else await dispatcher.prefill.query(entry, request)
    body = routing_answer(decode.worker.instance_id, prefill, list(request.token_ids))
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": body + DONE, "more_body": False})

"""Stored Responses (`store`, true unless the request says false, as in OpenAI's API): each response
with the conversation it ended, so that a later request's `previous_response_id` continues that
conversation without resending it, and `GET` / `DELETE /v1/responses/{id}` (and `GET
/v1/responses/{id}/input_items`) read and remove it.

Kept in this frontend's memory, encoded, up to `--responses-store-mb` (the least recently used go
first; 0 stores nothing, and a `previous_response_id` is then refused). Several frontend replicas
keep their own stores, and answer for each other's: an id made by another live replica is
forwarded there (replicas.py).
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec

from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.openai import ChatMessage

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dynamo.frontend.replicas import Replicas

PREFIX = "/v1/responses/"
RESPONSE_PREFIX = "resp_"  # of a response's id
INPUT_ITEMS_SUFFIX = "/input_items"


class StoredResponse(msgspec.Struct, omit_defaults=True):
    response: dict[str, Any]  # the Response object as the client got it
    conversation: list[ChatMessage]  # every message before this response, and its answer (no instructions)
    input_items: list[dict[str, Any]]  # this request's own input, as items


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredResponse)


class ResponseStore:
    """Stored responses by id, least recently used first out past `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self.tag = ""  # this replica's, in the ids of the responses it makes (replicas.py)
        self.peers: Replicas | None = None  # where a response made by another replica is asked for

    def __contains__(self, response_id: str) -> bool:
        return response_id in self._entries

    def put(self, stored: StoredResponse) -> None:
        data = _encoder.encode(stored)
        if len(data) > self.max_bytes:
            return  # larger than the whole store: kept nowhere rather than emptying it
        self.delete(stored.response["id"])
        self._entries[stored.response["id"]] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= len(dropped)

    def get(self, response_id: str) -> StoredResponse | None:
        data = self._entries.get(response_id)
        if data is None:
            return None
        self._entries.move_to_end(response_id)
        try:
            return _decoder.decode(data)
        except msgspec.ValidationError:  # stored by an older rule that let it in: gone, not a 500 on every read
            log.warning("stored response %s cannot be read back; dropped", response_id)
            self.delete(response_id)
            return None

    def delete(self, response_id: str) -> bool:
        data = self._entries.pop(response_id, None)
        if data is not None:
            self.bytes -= len(data)
        return data is not None

    def __len__(self) -> int:
        return len(self._entries)


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", "invalid_request_error", None, "not_found")


async def forwarded(store: ResponseStore | None, response_id: str | None, scope: dict, body: bytes, send,
                    receive=None) -> bool:
    """Whether the request went to the replica that made `response_id`, a response not held here."""
    return (response_id is not None and store is not None and store.peers is not None and response_id not in store
            and await store.peers.forward(response_id, RESPONSE_PREFIX, scope, body, send, receive))


def previous_conversation(store: ResponseStore | None, previous_id: str | None) -> list[ChatMessage]:
    """The conversation a `previous_response_id` continues; a 400 when it is not stored here."""
    if previous_id is None:
        return []
    if store is None:
        raise bad_request("`previous_response_id` needs stored responses: this frontend runs with "
                          "--responses-store-mb 0; send the full input", "previous_response_id", "unsupported_parameter")
    stored = store.get(previous_id)
    if stored is None:
        raise bad_request(f"Previous response with id '{previous_id}' not found.", "previous_response_id",
                          "previous_response_not_found")
    return stored.conversation


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's input as items with ids (a string input is one user message)."""
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}] \
        if isinstance(value, str) else [dict(item) for item in value]
    for item in items:
        item.setdefault("id", "msg_" + uuid.uuid4().hex)
    return items


def item_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}

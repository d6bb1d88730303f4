"""Stored Responses (`store`, true unless the request says false, as in OpenAI's API): each response
with the conversation it ended, so that a later request's `previous_response_id` continues that
conversation without resending it, and `GET` / `DELETE /v1/responses/{id}` (and `GET
/v1/responses/{id}/input_items`) read and remove it. The items stored (each response's output and
its input, listed as OpenAI lists them: typed, with ids and statuses) can be named again in a later
input by `item_reference`.

Kept in this frontend's memory, encoded, up to `--responses-store-mb` (the least recently used go
first; 0 stores nothing, and a `previous_response_id` is then refused). Several frontend replicas
keep their own stores, and answer for each other's: an id made by another live replica is
forwarded there (replicas.py). Not an item's: item ids carry no replica's tag (a client's own ids
neither), so an `item_reference` is resolved where the request runs (the replica its
`previous_response_id` names, else the one it reached).
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
        # The stored items by id (an `item_reference` names one): the responses holding each, oldest first (a
        # client re-sends earlier items with their ids, so one item is in several), and each response's ids.
        self._owners: dict[str, list[str]] = {}
        self._items_of: dict[str, list[str]] = {}

    def __contains__(self, response_id: str) -> bool:
        return response_id in self._entries

    def put(self, stored: StoredResponse) -> None:
        data = _encoder.encode(stored)
        ids = _item_ids(stored)
        size = len(data) + _index_bytes(ids)
        if size > self.max_bytes:
            return  # larger than the whole store: kept nowhere rather than emptying it
        response_id = stored.response["id"]
        self.delete(response_id)
        self._entries[response_id] = data
        self.bytes += size
        self._items_of[response_id] = ids
        for item_id in ids:
            self._owners.setdefault(item_id, []).append(response_id)
        while self.bytes > self.max_bytes:
            self.delete(next(iter(self._entries)))

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
        ids = self._items_of.pop(response_id, [])
        if data is not None:
            self.bytes -= len(data) + _index_bytes(ids)
        for item_id in ids:  # the item stays stored while another response holds it
            owners = self._owners[item_id]
            owners.remove(response_id)
            if not owners:
                del self._owners[item_id]
        return data is not None

    def items(self, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored items among `item_ids` (of responses' outputs or inputs), as listed, by id; each
        response holding some read once (an item several hold: the newest's)."""
        wanted: dict[str, set[str]] = {}
        for item_id in item_ids:
            owners = self._owners.get(item_id)
            if owners:
                wanted.setdefault(owners[-1], set()).add(item_id)
        found: dict[str, dict[str, Any]] = {}
        for owner, ids in wanted.items():
            stored = self.get(owner)
            for item in [*stored.response.get("output", ()), *stored.input_items] if stored is not None else ():
                if item.get("id") in ids:
                    found.setdefault(item["id"], item)
        return found

    def item(self, item_id: str) -> dict[str, Any] | None:
        """The stored item `item_id`, or None."""
        return self.items([item_id]).get(item_id)

    def __len__(self) -> int:
        return len(self._entries)


# What the item index keeps per item id of a response besides the id's characters (the string object, its
# slots in the index's dict and lists), counted in the store's bytes: a response of many small items costs that.
_INDEX_BYTES = 150


def _item_ids(stored: StoredResponse) -> list[str]:
    items = [*stored.response.get("output", ()), *stored.input_items]
    return list(dict.fromkeys(i["id"] for i in items if isinstance(i.get("id"), str)))


def _index_bytes(ids: list[str]) -> int:
    return sum(len(i) for i in ids) + _INDEX_BYTES * len(ids)


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
                          "--responses-store-mb 0; send the full input", "previous_response_id",
                          "unsupported_parameter")
    stored = store.get(previous_id)
    if stored is None:
        raise bad_request(f"Previous response with id '{previous_id}' not found.", "previous_response_id",
                          "previous_response_not_found")
    return stored.conversation


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's input as OpenAI lists it (`GET .../input_items`): every item typed, with an id and a
    status, a message's text as parts (`input_text`; an assistant's `output_text`); a string input is one
    user message. Clients send the short forms (the Agents SDK's `{"role", "content"}`), and SDKs read the
    listing by its `type`."""
    items = [{"role": "user", "content": value}] if isinstance(value, str) else value
    return [_listed(item) for item in items]


# An item's id prefix by its type, for the items sent without one.
_ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    item = {"type": "message", **item}
    kind = item["type"]
    if not isinstance(item.get("id"), str) or not item["id"]:
        item["id"] = _ID_PREFIXES.get(kind, "item_") + uuid.uuid4().hex
    if kind == "reasoning":
        item.setdefault("summary", [])
    elif kind in _ID_PREFIXES:
        item.setdefault("status", "completed")
    if kind == "message":
        item.setdefault("role", "user")  # as the input reads it
        item["content"] = _message_parts(item.get("content"), item.get("role"))
    return item


def _message_parts(content: Any, role: Any) -> list[dict[str, Any]]:
    """A message's content as typed parts: its text as the role's text parts, images and refusals as sent."""
    kind = "output_text" if role == "assistant" else "input_text"
    parts = [{"type": kind, "text": content}] if isinstance(content, str) else list(content or [])
    out = []
    for part in parts:
        if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
            part = {**part, "type": kind}
            if kind == "output_text":
                part.setdefault("annotations", [])
        out.append(part)
    return out


def resolved_input(store: ResponseStore | None, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """The input with each `item_reference` (`{"type": "item_reference", "id"}`, or `{"id"}` alone) replaced
    by the stored item it names; a 400 naming the reference when none is stored here."""
    if isinstance(value, str) or not any(_is_reference(item) for item in value):
        return value
    refs = [item.get("id") for item in value if _is_reference(item)]
    found = store.items([r for r in refs if isinstance(r, str)]) if store is not None else {}
    out = []
    for i, item in enumerate(value):
        if not _is_reference(item):
            out.append(item)
            continue
        ref = item.get("id")
        if not isinstance(ref, str) or ref not in found:
            hint = "" if store is not None else ": this frontend runs with --responses-store-mb 0 and stores none"
            raise bad_request(f"Item with id {ref!r} not found{hint}.", f"input[{i}].id")
        out.append(found[ref])
    return out


def _is_reference(item: Any) -> bool:
    return isinstance(item, dict) and (item.get("type") == "item_reference" or ("type" not in item and
                                                                                 item.keys() == {"id"}))


def item_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}

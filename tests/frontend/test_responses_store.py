"""The stored Responses (frontend/responses_store.py): bounded by encoded bytes, least recently used
out first, a response too big for the whole store kept nowhere, and the 400s a previous_response_id
gets when nothing is stored for it."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import ChatMessage
from dynamo.frontend.responses_store import ResponseStore, StoredResponse, input_items, previous_conversation


def stored(rid: str, words: int = 10) -> StoredResponse:
    return StoredResponse({"id": rid, "object": "response"}, [ChatMessage(role="user", content="word " * words)],
                          input_items("hi"))


def test_the_least_recently_used_go_first_past_the_byte_budget():
    size = len(msgspec.json.encode(stored("a")))
    store = ResponseStore(max_bytes=3 * size)
    for rid in "abc":
        store.put(stored(rid))
    assert store.get("a") is not None  # a is now the most recently used
    store.put(stored("d"))
    assert store.get("b") is None and [store.get(r) is not None for r in "acd"] == [True] * 3
    assert store.bytes <= store.max_bytes and len(store) == 3
    assert store.delete("c") and not store.delete("c") and len(store) == 2


def test_a_response_bigger_than_the_store_is_kept_nowhere_and_evicts_nothing():
    store = ResponseStore(max_bytes=2000)
    store.put(stored("small"))
    store.put(stored("huge", words=5000))
    assert store.get("huge") is None and store.get("small") is not None


def test_a_stored_conversation_comes_back_as_it_went_in():
    store = ResponseStore(max_bytes=1 << 20)
    store.put(stored("r1"))
    assert previous_conversation(store, "r1") == [ChatMessage(role="user", content="word " * 10)]
    assert previous_conversation(store, None) == []


@pytest.mark.parametrize("store, code", [(None, "unsupported_parameter"),
                                         (ResponseStore(1 << 20), "previous_response_not_found")])
def test_a_previous_response_id_nothing_is_stored_for_is_a_400(store, code):
    with pytest.raises(ApiError) as err:
        previous_conversation(store, "resp_missing")
    assert (err.value.status, err.value.param, err.value.code) == (400, "previous_response_id", code)


def test_input_items_get_ids_and_a_string_is_one_user_message():
    (item,) = input_items("hello")
    assert item["role"] == "user" and item["content"][0]["text"] == "hello" and item["id"].startswith("msg_")
    given = input_items([{"type": "function_call_output", "call_id": "c", "output": "x", "id": "fco_1"}])
    assert given[0]["id"] == "fco_1"

"""The stored Responses (frontend/responses_store.py): bounded by encoded bytes, least recently used
out first, a response too big for the whole store kept nowhere, and the 400s a previous_response_id
gets when nothing is stored for it; input items listed as OpenAI lists them, and an `item_reference`
resolved to the stored item it names."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import openai.types.responses as sdk
import pytest

from dynamo.frontend import responses_store
from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import ChatMessage
from dynamo.frontend.responses_store import (ResponseStore, StoredResponse, input_items, previous_conversation,
                                             resolved_input)


def stored(rid: str, words: int = 10) -> StoredResponse:
    return StoredResponse({"id": rid, "object": "response"}, [ChatMessage(role="user", content="word " * words)],
                          input_items("hi"))


def cost(response: StoredResponse) -> int:
    """What `response` takes of a store's bytes (its encoding and its items' index)."""
    store = ResponseStore(max_bytes=1 << 20)
    store.put(response)
    return store.bytes


def test_the_least_recently_used_go_first_past_the_byte_budget():
    size = cost(stored("a"))
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


def test_input_items_are_listed_as_openai_lists_them():
    """The short forms clients send (the Agents SDK's `{"role", "content"}`) come back typed, with ids and
    statuses, text as parts: what the SDK's own item types require."""
    listed = input_items([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "42"},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hmm"}]}])
    kinds = [sdk.ResponseInputMessageItem, sdk.ResponseOutputMessage, sdk.ResponseInputMessageItem,
             sdk.ResponseFunctionToolCallItem, sdk.ResponseFunctionToolCallOutputItem, sdk.ResponseReasoningItem]
    for item, kind in zip(listed, kinds, strict=True):
        kind.model_validate(item)
    assert listed[0]["content"] == [{"type": "input_text", "text": "hi"}] and listed[0]["type"] == "message"
    assert listed[1]["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert [i["id"][:3] for i in listed] == ["msg", "msg", "msg", "fc_", "fco", "rs_"]
    assert all(i["status"] == "completed" for i in listed[:5])


def with_items(rid: str) -> StoredResponse:
    output = [{"type": "message", "id": f"msg_out_{rid}", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": f"answer {rid}", "annotations": []}]}]
    return StoredResponse({"id": rid, "object": "response", "output": output}, [],
                          input_items([{"role": "user", "content": f"question {rid}", "id": f"msg_in_{rid}"}]))


def test_an_item_reference_is_the_stored_item_it_names():
    store = ResponseStore(max_bytes=1 << 20)
    store.put(with_items("r1"))
    resolved = resolved_input(store, [{"type": "item_reference", "id": "msg_in_r1"}, {"id": "msg_out_r1"},
                                      {"role": "user", "content": "next"}])
    assert [i.get("content") for i in resolved] == [[{"type": "input_text", "text": "question r1"}],
                                                    [{"type": "output_text", "text": "answer r1", "annotations": []}],
                                                    "next"]
    assert resolved_input(store, "plain") == "plain"
    with pytest.raises(ApiError) as err:
        resolved_input(store, [{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_nope"}])
    assert (err.value.status, err.value.param) == (400, "input[1].id")
    with pytest.raises(ApiError) as err:
        resolved_input(None, [{"type": "item_reference", "id": "msg_in_r1"}])
    assert (err.value.status, err.value.param) == (400, "input[0].id")


def test_an_items_reference_goes_with_its_response():
    size = cost(with_items("r1"))
    store = ResponseStore(max_bytes=2 * size)
    store.put(with_items("r1"))
    assert store.item("msg_out_r1") is not None
    store.delete("r1")
    assert store.item("msg_out_r1") is None and store.item("msg_in_r1") is None
    for rid in ("r2", "r3", "r4"):  # r2 is evicted
        store.put(with_items(rid))
    assert store.item("msg_in_r2") is None and store.item("msg_in_r4")["id"] == "msg_in_r4"


def test_an_item_a_later_response_re_sent_stays_while_any_response_holds_it():
    """Clients (the Agents SDK) send earlier output items back with their ids: the later response holds the
    item too, and deleting or evicting it leaves the item to the earlier one."""
    store = ResponseStore(max_bytes=1 << 20)
    store.put(with_items("a"))
    again = with_items("b")
    again.input_items = input_items([{"type": "message", "id": "msg_out_a", "role": "assistant",
                                      "content": [{"type": "output_text", "text": "answer a"}]}])
    store.put(again)
    assert store.delete("b") and store.get("a") is not None
    assert store.item("msg_out_a")["content"][0]["text"] == "answer a"
    assert resolved_input(store, [{"type": "item_reference", "id": "msg_out_a"}])[0]["id"] == "msg_out_a"
    store.put(again)
    store.delete("a")  # the other way round: b still holds it
    assert store.item("msg_out_a") is not None and store.item("msg_in_a") is None
    store.delete("b")
    assert store.item("msg_out_a") is None and store.bytes == 0


def test_the_item_index_is_counted_in_the_stores_bytes():
    store = ResponseStore(max_bytes=1 << 20)
    response = with_items("r1")
    store.put(response)
    assert store.bytes > len(msgspec.json.encode(response))
    store.delete("r1")
    assert store.bytes == 0


def test_references_to_one_response_read_it_once(monkeypatch):
    """Each stored response an input's references name is decoded once, however many of its items they name."""
    store = ResponseStore(max_bytes=1 << 20)
    store.put(with_items("r1"))
    store.put(with_items("r2"))
    decoded = []
    real = responses_store._decoder
    monkeypatch.setattr(responses_store, "_decoder", SimpleNamespace(decode=lambda data: decoded.append(data)
                                                                      or real.decode(data)))
    resolved = resolved_input(store, [{"type": "item_reference", "id": "msg_in_r1"}, {"id": "msg_out_r1"},
                                      {"id": "msg_in_r2"}, {"type": "item_reference", "id": "msg_out_r2"}])
    assert [i["id"] for i in resolved] == ["msg_in_r1", "msg_out_r1", "msg_in_r2", "msg_out_r2"]
    assert len(decoded) == 2


def test_a_message_sent_without_a_role_is_listed_as_the_users():
    (item,) = input_items([{"type": "message", "content": "hi"}])
    assert item["role"] == "user"
    sdk.ResponseInputMessageItem.model_validate(item)

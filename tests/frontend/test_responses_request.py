"""Responses input items as the chat messages they run as (frontend/responses_request.py): a function call's
output given as content parts, an earlier answer's refusal replayed, and the 400s that name the item."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.responses_request import decode_responses, input_messages

IMAGE = "data:image/png;base64,iVBORw0KGgo="


def output(parts) -> object:
    messages = input_messages([{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                               {"type": "function_call_output", "call_id": "c1", "output": parts}])
    assert (messages[1].role, messages[1].tool_call_id) == ("tool", "c1")
    return messages[1].content


def test_a_function_call_output_of_parts_is_a_tool_message_of_their_text():
    assert output("sunny, 21C") == "sunny, 21C"
    assert output([{"type": "input_text", "text": "sunny, "}, {"type": "input_text", "text": "21C"}]) == "sunny, 21C"
    assert output([]) == ""


def test_images_in_a_function_call_output_are_image_parts():
    """As in a message: the chat path then judges whether the model reads images (a 400 if not)."""
    assert output([{"type": "input_text", "text": "The chart:"}, {"type": "input_image", "image_url": IMAGE}]) == [
        {"type": "text", "text": "The chart:"}, {"type": "image_url", "image_url": {"url": IMAGE}}]


@pytest.mark.parametrize("parts,param", [
    ([{"type": "input_file", "file_data": "abc", "filename": "a.pdf"}], "input[1].output[0].type"),
    ([{"type": "input_text", "text": 3}], "input[1].output[0].text"),
    ({"text": "an object"}, "input[1].output"),
    (42, "input[1].output"),
])
def test_what_cannot_be_read_is_a_400_naming_the_output(parts, param):
    with pytest.raises(ApiError) as info:
        output(parts)
    assert (info.value.status, info.value.param) == (400, param)


def test_a_refusal_replayed_from_an_earlier_answer_is_its_text():
    messages = input_messages([
        {"role": "user", "content": "Do something bad."},
        {"type": "message", "role": "assistant",
         "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
        {"role": "user", "content": "Then something good."}])
    assert [(m.role, m.content) for m in messages] == [("user", "Do something bad."),
                                                       ("assistant", "I can't help with that."),
                                                       ("user", "Then something good.")]


def test_an_unknown_truncation_mode_is_refused_naming_it():
    rreq = decode_responses(json.dumps({"model": "m", "input": "hi", "truncation": "middle"}).encode())
    with pytest.raises(ApiError) as err:
        rreq.to_chat()
    assert err.value.param == "truncation"

"""Images in requests at the frontend: where they are found in a chat (and the Responses API's
`input_image` parts, converted to chat parts), and the 400s for malformed image parts."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.media_input import chat_images
from dynamo.frontend.openai import decode_request
from dynamo.frontend.responses_request import input_messages
from dynamo.frontend.validation import validate_chat


def chat(messages: list) -> object:
    req = decode_request(msgspec.json.encode({"model": "m", "messages": messages}), "chat")
    validate_chat(req)
    return req


def test_images_are_found_in_order_with_where_they_stand():
    req = chat([{"role": "system", "content": "hi"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://a/1.png"}},
                                             {"type": "text", "text": "and"},
                                             {"type": "image_url", "image_url": "https://a/2.png"}]}])
    assert chat_images(req) == [("https://a/1.png", "messages[1].content[0].image_url.url"),
                                ("https://a/2.png", "messages[1].content[2].image_url.url")]
    assert chat_images(chat([{"role": "user", "content": "no images"}])) == []


@pytest.mark.parametrize("part, param", [
    ({"type": "image_url"}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": ""}}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": 7}}, "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "https://a/1.png", "detail": "max"}},
     "messages[0].content[0].image_url.detail"),
    ({"type": "input_audio", "input_audio": {"data": "x"}}, "messages[0].content[0].type"),
])
def test_malformed_image_parts_are_400s_naming_the_field(part, param):
    with pytest.raises(ApiError) as err:
        chat([{"role": "user", "content": [part]}])
    assert err.value.status == 400 and err.value.param == param


def test_responses_input_images_become_chat_image_parts():
    [message] = input_messages([{"role": "user", "content": [
        {"type": "input_text", "text": "What is "}, {"type": "input_image", "image_url": "https://a/1.png", "detail": "low"},
        {"type": "input_text", "text": "?"}]}])
    assert message.content == [{"type": "text", "text": "What is "},
                               {"type": "image_url", "image_url": {"url": "https://a/1.png", "detail": "low"}},
                               {"type": "text", "text": "?"}]
    [text_only] = input_messages([{"role": "user", "content": [{"type": "input_text", "text": "a"},
                                                               {"type": "input_text", "text": "b"}]}])
    assert text_only.content == "ab"
    with pytest.raises(ApiError, match="text and images only"):
        input_messages([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}])

"""A chat request's content parts as validation.py checks them: a text part's `text` and an assistant's
refusal part's `refusal` are strings, else a 400 naming that field (not the chat template failing on it)."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import decode_request
from dynamo.frontend.validation import validate_chat


def chat(*messages: dict):
    return decode_request(json.dumps({"model": "m", "messages": list(messages)}).encode(), "chat")


@pytest.mark.parametrize("part, param", [
    ({"type": "text", "text": 42}, "messages[1].content[1].text"),
    ({"type": "text", "text": ["a"]}, "messages[1].content[1].text"),
    ({"type": "refusal", "refusal": {"no": 1}}, "messages[1].content[1].refusal"),
    ({"type": "refusal", "refusal": None}, "messages[1].content[1].refusal")])
def test_a_text_or_refusal_that_is_no_string_is_a_400_naming_it(part, param):
    req = chat({"role": "user", "content": "hi"},
               {"role": "assistant", "content": [{"type": "text", "text": "ok"}, part]})
    with pytest.raises(ApiError) as err:
        validate_chat(req)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, "invalid_type")


def test_text_and_refusal_parts_with_strings_pass():
    validate_chat(chat({"role": "user", "content": [{"type": "text", "text": "hi"}]},
                       {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                       {"role": "user", "content": [{"type": "text"}]}))

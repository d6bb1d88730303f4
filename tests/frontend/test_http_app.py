"""Which prompts the frontend builds inline rather than on its prep pool."""

from __future__ import annotations

import json

from dynamo.frontend.preparation import is_token_prompt
from dynamo.frontend.openai import decode_request


def request(kind: str, **body):
    return decode_request(json.dumps({"model": "m", **body}).encode(), kind)


def test_token_id_completions_are_built_inline_text_and_chat_are_not():
    assert is_token_prompt(request("completion", prompt=list(range(5000))))
    assert is_token_prompt(request("completion", prompt=[[1, 2, 3]]))
    assert not is_token_prompt(request("completion", prompt="a long text " * 1000))
    assert not is_token_prompt(request("completion", prompt=["text"]))
    assert not is_token_prompt(request("chat", messages=[{"role": "user", "content": "hi"}]))

"""A large unary answer's JSON built piecewise (sse.piecewise_choice): the same document as one encoding."""

from __future__ import annotations

import json

import msgspec

from dynamo.frontend.sse import chat_body, piecewise_choice


def test_piecewise_encoding_is_the_same_json_as_one_encoding():
    content = [{"token": f"t{i}", "logprob": -0.5, "bytes": [116], "top_logprobs": [{"token": "x", "logprob": -1.0}]}
               for i in range(4501)]
    completions = {"tokens": [f"t{i}" for i in range(2500)], "token_logprobs": [-0.1] * 2500, "top_logprobs": None}
    choices = [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "logprobs": {"content": content}},
               {"index": 1, "text": "hi", "logprobs": completions}, {"index": 2, "logprobs": {"content": []}},
               {"index": 3, "message": {"content": "no logprobs"}, "logprobs": None}]
    whole = chat_body("id", "m", 1, choices, {"total_tokens": 3})
    pieces = chat_body("id", "m", 1, [piecewise_choice(c, per=1000) for c in choices], {"total_tokens": 3})
    assert json.loads(pieces) == json.loads(whole)
    assert isinstance(piecewise_choice(choices[0]), msgspec.Raw)

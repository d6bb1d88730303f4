"""A large unary answer sent in pieces (`unary_body.py`) is, byte for byte, the document one encoding
of it makes (`sse.chat_body` / `sse.completion_body` with `sse.chat_logprobs` / `completion_logprobs`);
chat logprobs as structs (`logprob_json.py`) encode as the dicts do; the sender lets the event loop run
between pieces and stops building once the client is gone."""

from __future__ import annotations

import asyncio
import copy
import json
import random

from dynamo.frontend import unary_body
from dynamo.frontend.logprob_json import ChatLogprobs
from dynamo.frontend.sse import _json, chat_body, chat_logprobs, completion_body, completion_logprobs


def token_text(token_id: int) -> str:
    return ["é", "\ufffd", '"q"', " the", "\n", "日本"][token_id % 6] + str(token_id)


def entries(count: int, top: int, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        alts = tuple((rng.randrange(50_000), -rng.random() * 9) for _ in range(top))
        out.append((rng.randrange(50_000), -rng.random(), alts if i % 7 else ()))  # some positions without any
    out.append((7, float("-inf"), ((8, -1e-300),)))  # non-finite logprobs encode as null, as before
    return out


def chat_choices(seed: int) -> list[tuple[dict, list]]:
    lists = [entries(300, 20, seed), [], entries(5, 0, seed + 1)]
    fields = [{"index": i, "message": {"role": "assistant", "content": f"answer {i}"}, "logprobs": None,
               "finish_reason": "length"} for i in range(len(lists))]
    return list(zip(fields, lists))


def test_chat_logprob_structs_encode_as_the_dicts():
    lps = entries(500, 20, 1)
    assert _json(ChatLogprobs(token_text)(lps)) == _json(chat_logprobs(lps, token_text))


def test_a_chat_answer_in_pieces_is_the_one_encoding():
    choices = chat_choices(2)
    whole = chat_body("id-1", "m", 7, [{**f, "logprobs": chat_logprobs(e, token_text)} for f, e in choices],
                      {"total_tokens": 3}, {"worker_id": {"decode_worker_id": 5}})
    lps = ChatLogprobs(token_text)
    pieces = list(unary_body.body({"id": "id-1", "object": "chat.completion", "created": 7, "model": "m"},
                                  (unary_body.chat_choice(c, lps, 21) for c in copy.deepcopy(choices)),
                                  {"usage": {"total_tokens": 3}, "nvext": {"worker_id": {"decode_worker_id": 5}}}))
    assert b"".join(pieces) == whole
    assert len(pieces) > 5  # the 300 x 21 entries went in several slices
    json.loads(b"".join(pieces))


def test_a_completion_answer_in_pieces_is_the_one_encoding_and_its_entries_are_let_go():
    lists = [entries(400, 5, 3), entries(3, 5, 4)]
    fields = [{"index": i, "text": "t", "logprobs": None, "finish_reason": "stop"} for i in range(2)]
    whole = completion_body("id-2", "m", 7, [{**f, "logprobs": completion_logprobs(e, token_text, 0)}
                                             for f, e in zip(fields, lists)], {"total_tokens": 1})
    kept = [list(e) for e in lists]
    pieces = unary_body.body({"id": "id-2", "object": "text_completion", "created": 7, "model": "m"},
                             (unary_body.completion_choice(c, token_text, 6) for c in zip(fields, kept)),
                             {"usage": {"total_tokens": 1}})
    assert b"".join(pieces) == whole
    assert kept == [[], []]  # each choice's entries cleared once encoded: its memory goes as the body does


async def test_the_sender_sends_in_pieces_and_stops_once_the_client_is_gone():
    sent: list[dict] = []
    turns = 0

    async def send(message: dict) -> None:
        sent.append(message)

    async def other_request() -> None:  # counts the event loop's turns while the body goes out
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    choices = [(f, e * 40) for f, e in chat_choices(5)]  # ~12,000 x 21 entries: several MB
    pieces = unary_body.body({"id": "x"}, (unary_body.chat_choice(c, ChatLogprobs(token_text), 21) for c in choices),
                             {"usage": {}})
    other = asyncio.ensure_future(other_request())
    assert await unary_body.send_body(send, pieces, lambda: False)
    other.cancel()
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start" and all(h[0] != b"content-length" for h in sent[0]["headers"])
    assert len(bodies) > 5 and [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert turns > len(bodies)  # the loop ran between pieces, not only between sends
    doc = json.loads(b"".join(m["body"] for m in bodies))
    assert [len(c["logprobs"]["content"]) for c in doc["choices"]] == [301 * 40, 0, 6 * 40]

    sent.clear()
    gone = iter([False, False, True])
    pieces = unary_body.body({"id": "x"}, (unary_body.chat_choice(c, ChatLogprobs(token_text), 21)
                                           for c in chat_choices(6)), {"usage": {}})
    assert not await unary_body.send_body(send, pieces, lambda: next(gone))
    assert all(m.get("more_body", True) for m in sent)  # never finished: nothing more was built

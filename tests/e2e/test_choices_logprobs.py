"""`n > 1` fanned out to the engine and `logprobs` / `top_logprobs`, end to end with
the official `openai` client against a mocker worker (its logprobs are synthetic but
well-formed: the sampled token is the most likely, alternatives strictly decrease)."""

from __future__ import annotations

import math
import re

import openai
import pytest

from dynamo.frontend.unary_answer import LARGE_ANSWER_ENTRIES
from tests.fixtures.procs import mocker_cluster

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    with mocker_cluster(tmp_path_factory.mktemp("choices"), tiny_model, "--speedup-ratio", "0",
                        system_port=False) as c:
        yield c


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


MESSAGES = [{"role": "user", "content": "Give me three ideas"}]


def test_n_choices_unary_are_independent_and_usage_is_summed(client):
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=10, seed=5)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    texts = [c.message.content for c in resp.choices]
    assert len(set(texts)) == 3, "independent seeds give different samples"
    assert resp.usage.completion_tokens == 30
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 30
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=10, seed=5)
    assert [c.message.content for c in again.choices] == texts, "a seed makes n choices reproducible"


def test_n_choices_streamed_are_indexed(client):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=10, seed=5,
                                            stream=True, stream_options={"include_usage": True})
    texts, finishes, roles = {}, {}, {}
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            roles.setdefault(ch.index, ch.delta.role)
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    unary = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=10, seed=5)
    assert texts == {c.index: c.message.content for c in unary.choices}
    assert finishes == {0: "length", 1: "length", 2: "length"}
    assert roles == {0: "assistant", 1: "assistant", 2: "assistant"}
    assert usage.completion_tokens == 30


def test_completions_n(client):
    resp = client.completions.create(model=MODEL, prompt="Once upon a time", n=2, max_tokens=8, temperature=0.8)
    assert [c.index for c in resp.choices] == [0, 1] and resp.usage.completion_tokens == 16


def _check_token_logprobs(items, top_k):
    for item in items:
        assert math.isfinite(item.logprob) and item.logprob <= 0
        assert item.bytes == list(item.token.encode())
        assert len(item.top_logprobs) == top_k
        lps = [t.logprob for t in item.top_logprobs]
        assert lps == sorted(lps, reverse=True) and len({t.token for t in item.top_logprobs}) == top_k
        if top_k:
            assert item.top_logprobs[0].token == item.token and item.top_logprobs[0].logprob == item.logprob


def test_a_large_unary_answer_built_off_the_loop_is_the_streamed_answer(client):
    """n x tokens x (1 + top_logprobs) over unary_answer.LARGE_ANSWER_ENTRIES: the unary body is built in a
    thread and encoded piecewise; it says what the same request streamed says."""
    ask = dict(model=MODEL, messages=MESSAGES, n=4, max_tokens=300, seed=3, temperature=0.9, logprobs=True,
               top_logprobs=20, extra_body={"ignore_eos": True})
    unary = client.chat.completions.create(**ask)
    assert 4 * 300 * 21 > LARGE_ANSWER_ENTRIES
    streamed: dict[int, list] = {}
    for chunk in client.chat.completions.create(**ask, stream=True):
        for ch in chunk.choices:
            if ch.logprobs:
                streamed.setdefault(ch.index, []).extend(ch.logprobs.content)
    for choice in unary.choices:
        items = choice.logprobs.content
        assert len(items) == 300 and "".join(i.token for i in items) == choice.message.content
        _check_token_logprobs(items[:5], 20)
        assert [(i.token, i.logprob) for i in items] == [(i.token, i.logprob) for i in streamed[choice.index]]


def test_chat_logprobs_unary_and_streamed(client):
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, seed=1, logprobs=True,
                                          top_logprobs=3)
    items = resp.choices[0].logprobs.content
    assert len(items) == 12
    assert "".join(i.token for i in items) == resp.choices[0].message.content
    _check_token_logprobs(items, 3)
    streamed = []
    for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, seed=1,
                                                logprobs=True, top_logprobs=3, stream=True):
        for ch in chunk.choices:
            if ch.logprobs:
                streamed += ch.logprobs.content
    assert [(i.token, i.logprob) for i in streamed] == [(i.token, i.logprob) for i in items]
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, logprobs=True)
    _check_token_logprobs(plain.choices[0].logprobs.content, 0)
    none = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
    assert none.choices[0].logprobs is None


def test_completions_logprobs(client):
    resp = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, logprobs=2, seed=3)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    assert "".join(lp.tokens) == resp.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(8)]
    assert all(len(top) == 2 and max(top.values()) == p for top, p in zip(lp.top_logprobs, lp.token_logprobs))


def test_logprob_tokens_as_token_ids(client):
    """`return_tokens_as_token_ids` (Dynamo's and vLLM's root option): every logprob token, sampled or
    top, is "token_id:<id>", the text stays text."""
    resp = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, logprobs=2, seed=3,
                                     extra_body={"return_tokens_as_token_ids": True})
    plain = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, logprobs=2, seed=3)
    lp = resp.choices[0].logprobs
    assert resp.choices[0].text == plain.choices[0].text
    assert all(re.fullmatch(r"token_id:\d+", t) for t in lp.tokens)
    assert all(re.fullmatch(r"token_id:\d+", t) for top in lp.top_logprobs for t in top)
    assert lp.token_logprobs == plain.choices[0].logprobs.token_logprobs
    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, seed=1, logprobs=True,
                                          top_logprobs=2, extra_body={"return_tokens_as_token_ids": True})
    items = chat.choices[0].logprobs.content
    assert all(re.fullmatch(r"token_id:\d+", t.token) for item in items for t in [item, *item.top_logprobs])
    assert items[0].bytes == list(items[0].token.encode())


def test_the_stop_string_that_ended_the_answer_is_its_stop_reason(client):
    """nvext.extra_fields ["stop_reason"]: the stop string the frontend matched, unary and streamed; null
    for a length finish; absent for n > 1 (Dynamo serves it for single-choice requests)."""
    ask = {"nvext": {"extra_fields": ["stop_reason"]}}
    text = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, seed=9).choices[0]
    stop = next(c for c in text.message.content[1:] if c.isalpha())
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, seed=9,
                                          stop=["never-here", stop], extra_body=ask)
    assert resp.choices[0].finish_reason == "stop" and resp.model_extra["nvext"] == {"stop_reason": stop}
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, seed=9,
                                                 stop=[stop], stream=True, extra_body=ask))
    assert chunks[-1].model_extra["nvext"] == {"stop_reason": stop}
    free = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, extra_body=ask)
    assert free.model_extra["nvext"] == {"stop_reason": None}
    many = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, n=2, seed=1, extra_body=ask)
    assert "stop_reason" not in (many.model_extra.get("nvext") or {})
    with pytest.raises(openai.BadRequestError) as info:  # a stop token id beyond the vocabulary
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, stop=[10**9])
    assert info.value.body["param"] == "stop"


def test_embeddings_on_a_generation_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model=MODEL, input="hello")


def test_n_choices_with_a_stop_string(client):
    """Each choice stops on its own; the others keep going and the request completes."""
    unstopped = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=30, seed=9)
    stop = "e"
    assert all(stop in c.message.content for c in unstopped.choices)
    for stream in (False, True):
        resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=30, seed=9,
                                              stop=[stop], stream=stream)
        if stream:
            texts, finishes = {}, {}
            for chunk in resp:
                for ch in chunk.choices:
                    texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
                    if ch.finish_reason:
                        finishes[ch.index] = ch.finish_reason
        else:
            texts = {c.index: c.message.content for c in resp.choices}
            finishes = {c.index: c.finish_reason for c in resp.choices}
        assert finishes == {0: "stop", 1: "stop", 2: "stop"}
        assert texts == {c.index: c.message.content.split(stop)[0] for c in unstopped.choices}


def test_completions_echo(client):
    plain = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, seed=2)
    echoed = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, seed=2, echo=True)
    assert echoed.choices[0].text == "Once upon a time" + plain.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, seed=2, echo=True, stream=True) if c.choices)
    assert streamed == echoed.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, echo=True, logprobs=1)

"""End to end through real processes: frontend + mocker workers, the official
`openai` client, on the embedded file discovery and on a real etcd."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.fixtures.procs import mocker_cluster
from tests.fixtures.servers import etcd_server  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module", params=["file", "etcd"])
def cluster(request, tiny_model, tmp_path_factory):
    env = {}
    if request.param == "etcd":
        env["ETCD_ENDPOINTS"] = request.getfixturevalue("etcd_server")
    with mocker_cluster(tmp_path_factory.mktemp(f"serving-{request.param}"), tiny_model, "--speedup-ratio", "100",
                        "--block-size", "16", backend=request.param, extra_env=env) as c:
        yield c


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def test_models_lists_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_a_404(client):
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "dynamo")
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert "no-such-model" in err.value.message


def test_chat_non_streaming(client):
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello there"}],
                                          max_tokens=12, seed=7)
    choice = resp.choices[0]
    assert resp.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert resp.usage.completion_tokens == 12
    assert resp.usage.prompt_tokens > 5
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 12
    assert resp.usage.prompt_tokens_details.cached_tokens == 0  # a fresh prompt shorter than one KV block


def test_chat_streaming_with_usage(client):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Stream please"}],
                                            max_tokens=20, stream=True, stream_options={"include_usage": True},
                                            seed=3)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    unary = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Stream please"}],
                                           max_tokens=20, seed=3)
    assert text == unary.choices[0].message.content


def test_completions_streaming_and_not(client):
    full = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, seed=11)
    assert full.object == "text_completion"
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 16
    parts = list(client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, seed=11,
                                           stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == full.choices[0].text


def test_completion_with_token_id_prompt(client):
    resp = client.completions.create(model=MODEL, prompt=[10, 20, 30, 40], max_tokens=4)
    assert resp.usage.prompt_tokens == 4
    assert resp.usage.completion_tokens == 4


def test_stop_string_is_hidden_and_ends_generation(client):
    base = client.completions.create(model=MODEL, prompt="The stop test", max_tokens=40, seed=5)
    text = base.choices[0].text
    assert len(text) > 12
    stop = text[8:12]
    expected = text[: text.index(stop)]
    for stream in (False, True):
        if stream:
            parts = list(client.completions.create(model=MODEL, prompt="The stop test", max_tokens=40, seed=5,
                                                   stop=[stop], stream=True))
            got = "".join(p.choices[0].text for p in parts if p.choices)
            finish = [p.choices[0].finish_reason for p in parts if p.choices and p.choices[0].finish_reason]
            assert finish == ["stop"]
        else:
            resp = client.completions.create(model=MODEL, prompt="The stop test", max_tokens=40, seed=5,
                                             stop=[stop])
            got = resp.choices[0].text
            assert resp.choices[0].finish_reason == "stop"
        assert got == expected
        assert stop not in got
    shown = client.completions.create(model=MODEL, prompt="The stop test", max_tokens=40, seed=5, stop=[stop],
                                      extra_body={"include_stop_str_in_output": True})
    assert shown.choices[0].text == expected + stop and shown.choices[0].finish_reason == "stop"


def test_max_tokens_default_fills_context(client):
    resp = client.completions.create(model=MODEL, prompt="x" * 10)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens + resp.usage.completion_tokens == 2048


def test_prefix_cache_shows_as_cached_tokens(client):
    prompt = "A long shared prefix about distributed inference. " * 12
    client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    # Every full KV block of the prompt (the mocker's default block: 64 tokens), never the last token.
    total = again.usage.prompt_tokens
    assert total > 128
    assert again.usage.prompt_tokens_details.cached_tokens == min(total // 64 * 64, total - 1)


def test_many_concurrent_streams(cluster):
    async def one(client, i):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"request {i}"}], max_tokens=24, stream=True,
            stream_options={"include_usage": True})
        usage = None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
        return usage.completion_tokens

    async def main():
        client = openai.AsyncOpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
        results = await asyncio.gather(*(one(client, i) for i in range(48)))
        await client.close()
        return results

    assert asyncio.run(main()) == [24] * 48

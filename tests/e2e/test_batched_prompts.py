"""`POST /v1/completions` with several prompts (`prompt_batch.py`), end to end with the official `openai` client
against a mocker worker: prompt `i`'s `n` choices at indexes `i*n .. i*n+n-1`, unary and streamed, each echoing its
own prompt, usage summed over the prompts (each prompt's tokens once, every choice's completion tokens); token-id
prompts; the 400s (too many choices, a prompt over the context, naming it); a client that hangs up mid-stream
leaves nothing running on the worker."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.procs import http_get, metric_value, mocker_cluster, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
PROMPTS = ["Once upon a time", "The quick brown fox", "In a galaxy far away"]


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    with mocker_cluster(tmp_path_factory.mktemp("batched"), tiny_model, "--speedup-ratio", "1") as c:
        yield c


@pytest.fixture()
def client(cluster):
    return cluster.openai_client()


def prompt_tokens(client, prompt) -> int:
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=1).usage.prompt_tokens


def test_three_prompts_two_choices_each_unary(client):
    resp = client.completions.create(model=MODEL, prompt=PROMPTS, n=2, max_tokens=5, echo=True, temperature=1,
                                     seed=3, extra_body={"ignore_eos": True})
    assert [c.index for c in resp.choices] == list(range(6))
    for c in resp.choices:
        assert c.text.startswith(PROMPTS[c.index // 2]), (c.index, c.text)  # its own prompt's choices
        assert c.finish_reason == "length"
    assert resp.usage.completion_tokens == 6 * 5
    assert resp.usage.prompt_tokens == sum(prompt_tokens(client, p) for p in PROMPTS)  # once per prompt, not per n
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 30
    single = client.completions.create(model=MODEL, prompt=PROMPTS[1], n=2, max_tokens=5, echo=True, temperature=1,
                                       seed=3, extra_body={"ignore_eos": True})
    assert [c.text for c in resp.choices[2:4]] == [c.text for c in single.choices]  # as if asked alone


def test_three_prompts_two_choices_each_streamed(client):
    stream = client.completions.create(model=MODEL, prompt=PROMPTS, n=2, max_tokens=5, echo=True, temperature=1,
                                       seed=3, stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    texts, finishes, usages, ids = {}, {}, [], set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage:
            usages.append(chunk.usage)
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    unary = client.completions.create(model=MODEL, prompt=PROMPTS, n=2, max_tokens=5, echo=True, temperature=1,
                                      seed=3, extra_body={"ignore_eos": True})
    assert texts == {c.index: c.text for c in unary.choices}
    assert finishes == {i: "length" for i in range(6)}
    assert len(ids) == 1, ids  # one response id
    (usage,) = usages  # one usage chunk, covering everything
    assert (usage.prompt_tokens, usage.completion_tokens) == (unary.usage.prompt_tokens, 30)


def test_the_stream_ends_with_one_done(cluster):
    body = {"model": MODEL, "prompt": PROMPTS[:2], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    text = httpx.post(cluster.base_url + "/v1/completions", json=body, timeout=60).text
    assert text.count("data: [DONE]") == 1 and text.rstrip().endswith("data: [DONE]")
    assert text.count('"usage":{') == 1


def test_token_id_prompts(client):
    resp = client.completions.create(model=MODEL, prompt=[[11, 12, 13], [14, 15]], max_tokens=4,
                                     extra_body={"ignore_eos": True})
    assert [c.index for c in resp.choices] == [0, 1]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (5, 8)


def test_stop_and_logprobs_apply_to_every_prompt(client):
    resp = client.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=6, logprobs=2, seed=4,
                                     extra_body={"ignore_eos": True})
    for c in resp.choices:
        assert len(c.logprobs.tokens) == 6 and all(len(top) == 2 for top in c.logprobs.top_logprobs)
    word = resp.choices[1].text[2:4]  # a piece of the second prompt's answer: it stops there
    stopped = client.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=6, logprobs=2, seed=4,
                                        stop=[word], extra_body={"ignore_eos": True})
    assert stopped.choices[1].finish_reason == "stop" and word not in stopped.choices[1].text


def test_more_than_128_choices_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=["p"] * 65, n=2, max_tokens=2, temperature=1)
    assert err.value.body["param"] == "prompt" and "130" in err.value.body["message"]
    ok = client.completions.create(model=MODEL, prompt=["p"] * 64, n=2, max_tokens=1, temperature=1)
    assert len(ok.choices) == 128


@pytest.mark.parametrize("prompts", [["fine", "word " * 5000, "fine"], [[11] * 3, [11] * 5000, [11] * 3]])
def test_a_prompt_over_the_context_is_a_400_naming_it(client, prompts):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=prompts, max_tokens=2)
    body = err.value.body
    assert (body["param"], body["code"]) == ("prompt", "context_length_exceeded")
    assert body["message"].startswith("prompt[1]: "), body


def test_an_empty_prompt_in_the_batch_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=["a", ""], max_tokens=2)
    assert err.value.body["param"] == "prompt" and "prompt[1]" in err.value.body["message"]


def worker_inflight(cluster) -> float:
    worker = next(p for p in cluster.procs if getattr(p, "system_port", None))
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_inflight_requests") or 0.0


def test_a_client_that_hangs_up_mid_stream_stops_every_prompt(cluster):
    body = {"model": MODEL, "prompt": PROMPTS, "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as http, http.stream("POST", cluster.base_url + "/v1/completions",
                                                       json=body) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        next(lines)
        wait_until(lambda: worker_inflight(cluster) == 3, 30, "the three prompts running on the worker")
    # Hung up: every prompt's request ends on the worker long before its 2,000 tokens would.
    wait_until(lambda: worker_inflight(cluster) == 0, 10, "the worker to drop the three requests")
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    assert (metric_value(text, "dynamo_frontend_inflight_requests", {"model": MODEL}) or 0) == 0

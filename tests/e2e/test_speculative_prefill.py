"""Speculative next-turn prefill (`nvext.agent_hints.speculative_prefill`) on a real frontend and a
real mocker worker, through the official `openai` client: after a turn answers, the frontend sends
the conversation with that answer as a one-token request, so the next turn finds its whole history
cached; without the hint, or after a session's final turn, nothing extra is sent. Such conversations
also reuse the frontend's tokenizer cache (`--tokenizer-cache-bytes`), with exact token counts."""

from __future__ import annotations

import openai
import pytest

from dynamo.llm.chat_template import ChatTemplate
from dynamo.llm.tokenizer import Tokenizer
from tests.e2e.test_session_affinity import MODEL, served
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

SYSTEM = "You are a careful assistant. " * 40  # a few hundred tokens of history to start
BLOCK = 16


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("speculative-prefill"), tiny_model, "file")
    c.workers = [c.mocker("--block-size", str(BLOCK))]
    c.frontend("--router-mode", "kv")
    c.wait_workers(MODEL, 1)
    try:
        yield c
    finally:
        c.stop()


def warmups(c: Cluster, outcome: str = "done") -> int:
    text = http_get(c.base_url + "/metrics")[1].decode()
    return int(metric_value(text, "dynamo_frontend_speculative_prefills_total", {"outcome": outcome}) or 0)


def turn(client, messages: list[dict], speculate: bool, stream: bool, **extra) -> tuple[str, int]:
    """(the answer's text, the prompt tokens found cached)."""
    nvext = {"agent_hints": {"speculative_prefill": True}} if speculate else {}
    args = dict(model=MODEL, messages=messages, max_tokens=48, extra_body={"nvext": nvext} | extra.pop("body", {}),
                **extra)
    if not stream:
        reply = client.chat.completions.create(**args)
        return reply.choices[0].message.content, reply.usage.prompt_tokens_details.cached_tokens
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage.prompt_tokens_details.cached_tokens


def conversation(c: Cluster, name: str, speculate: bool, stream: bool) -> tuple[int, list[dict]]:
    """Two turns of one conversation: the second turn's cached prompt tokens, and the history it
    repeats (the first turn with its answer)."""
    client = c.openai_client()
    messages = [{"role": "system", "content": f"{name}: {SYSTEM}"}, {"role": "user", "content": "first question"}]
    before, done = served(c.workers[0]), warmups(c)
    answer, _ = turn(client, messages, speculate, stream)
    if speculate:  # the warmup reached the worker and ended before the next turn is sent
        wait_until(lambda: warmups(c) == done + 1, 60, "the speculative prefill")
    assert served(c.workers[0]) - before == (2 if speculate else 1)
    history = [*messages, {"role": "assistant", "content": answer}]
    return turn(client, [*history, {"role": "user", "content": "second question"}], False, False)[1], history


def full_blocks(model_dir, history: list[dict]) -> int:
    """Prompt tokens in the full KV blocks of the history as the next turn's prompt begins with it."""
    text = ChatTemplate.from_dir(model_dir).render(history, add_generation_prompt=False)
    return len(Tokenizer.from_dir(model_dir).encode(text)) // BLOCK * BLOCK


@pytest.mark.parametrize("stream", [True, False])
def test_the_next_turn_finds_its_history_with_the_answer_cached(cluster, tiny_model, stream):
    without, history = conversation(cluster, f"plain-{stream}", speculate=False, stream=stream)
    assert without < full_blocks(tiny_model, history)  # the answer, re-tokenized, is not all in the cache
    warmed, history = conversation(cluster, f"warmed-{stream}", speculate=True, stream=stream)
    assert warmed >= full_blocks(tiny_model, history), warmed  # every full block of it is, after the warmup


def responses_turn(client, instructions: str, items: list[dict], speculate: bool, stream: bool
                   ) -> tuple[list[dict], int]:
    """One `/v1/responses` turn: (its output items, the input tokens found cached)."""
    nvext = {"agent_hints": {"speculative_prefill": True}} if speculate else {}
    args = dict(model=MODEL, instructions=instructions, input=items, max_output_tokens=48, extra_body={"nvext": nvext})
    if stream:
        events = list(client.responses.create(stream=True, **args))
        response = next(e.response for e in events if e.type in ("response.completed", "response.incomplete"))
    else:
        response = client.responses.create(**args)
    return [o.model_dump(exclude_none=True) for o in response.output], response.usage.input_tokens_details.cached_tokens


@pytest.mark.parametrize("stream", [True, False])
def test_a_responses_turn_warms_the_next_one_too(cluster, tiny_model, stream):
    """Agents on the Responses API send their output items back as the next input: after the warmup
    the next turn finds every full block of that history cached."""
    client = cluster.openai_client()
    instructions = f"responses-{stream}: {SYSTEM}"
    first = [{"role": "user", "content": "first question"}]
    cached, blocks = {}, {}
    for speculate in (False, True):
        items = [{**first[0], "content": f"{speculate} {first[0]['content']}"}]
        before, done = served(cluster.workers[0]), warmups(cluster)
        output, _ = responses_turn(client, instructions, items, speculate, stream)
        if speculate:
            wait_until(lambda n=done + 1: warmups(cluster) == n, 60, "the speculative prefill")
        assert served(cluster.workers[0]) - before == (2 if speculate else 1)
        history = [*items, *output]
        _, cached[speculate] = responses_turn(client, instructions, [*history, {"role": "user", "content": "next"}],
                                              False, False)
        text = "".join(c["text"] for o in output if o["type"] == "message" for c in o["content"])
        blocks[speculate] = full_blocks(tiny_model, [{"role": "system", "content": instructions}, items[0],
                                                     {"role": "assistant", "content": text}])
    assert cached[False] < blocks[False]  # the answer, re-tokenized, is not all in the cache
    assert cached[True] >= blocks[True], (cached, blocks)


def test_no_warmup_after_a_sessions_final_turn(cluster):
    client = cluster.openai_client()
    before = served(cluster.workers[0])
    turn(client, [{"role": "user", "content": "bye"}], True, False,
         extra_headers={"x-dynamo-session-id": "s-final", "x-dynamo-session-final": "true"})
    assert served(cluster.workers[0]) - before == 1


def test_a_non_boolean_hint_is_a_400(cluster):
    with pytest.raises(openai.BadRequestError) as err:
        turn(cluster.openai_client(), [{"role": "user", "content": "hi"}], False, False,
             body={"nvext": {"agent_hints": {"speculative_prefill": "yes"}}})
    assert err.value.body["param"] == "nvext.agent_hints.speculative_prefill"


def test_repeated_prompts_are_tokenized_from_the_cache_and_counted_exactly(cluster, tiny_model):
    """The system turn and earlier turns come from the tokenizer cache: prompt_tokens is still the
    whole rendered prompt's count, as the tokenizer alone gives it."""
    client = cluster.openai_client()
    messages = [{"role": "system", "content": "cache: " + SYSTEM}]
    hits = lambda: metric_value(http_get(cluster.base_url + "/metrics")[1].decode(),  # noqa: E731
                                "dynamo_frontend_tokenizer_cache_hits_total") or 0
    before = hits()
    for n in range(3):
        messages.append({"role": "user", "content": f"question {n} " * 20})
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
        text = ChatTemplate.from_dir(tiny_model).render(messages, add_generation_prompt=True)
        assert reply.usage.prompt_tokens == len(Tokenizer.from_dir(tiny_model).encode(text))
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    assert hits() - before >= 3  # the system turn twice, the first exchange once, at least

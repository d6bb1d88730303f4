"""The reasoning budget, enforced by the frontend (frontend/thinking_budget.py), end to end: a mocker
replays a model that reasons far past its budget (`--replay-file`, Qwen3 tags); with
`nvext.max_thinking_tokens` on chat, or Anthropic's `thinking.budget_tokens`, the reasoning stops at
the budget, the frontend closes it, and the model answers from there. The replay's continuation key
(the reasoning's start) is in the prompt only once the frontend sent the reasoning back, as a real
model's next tokens would follow it."""

from __future__ import annotations

import anthropic
import pytest

from tests.fixtures.procs import http_get, metric_value
from tests.fixtures.tools_model import replaying_cluster

pytestmark = pytest.mark.e2e

MODEL = "thinker"
THOUGHTS = "I should weigh this once more. " * 12
SCRIPTS = {
    "case:overthink": f"<think>\n{THOUGHTS}</think>\n\nThe answer after all that thought.",
    "<think>\nI should": "The answer within the budget.",  # the continuation: its prompt has the reasoning
    # gpt-oss's Harmony: the analysis message is the reasoning; closing it early opens the final channel.
    "case:harmony-overthink": (f"<|channel|>analysis<|message|>{THOUGHTS}<|end|><|start|>assistant<|channel|>final"
                               "<|message|>The answer after all that thought.<|return|>"),
    "analysis<|message|>I should": "The answer within the budget.<|return|>",
}
HARMONY = "harmony-thinker"
BUDGET = 10


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thinking")
    with replaying_cluster(tmp, tiny_model, SCRIPTS, MODEL, "--enable-anthropic-api") as c:
        c.mocker("--speedup-ratio", "1", "--replay-file", str(tmp / "replay.json"), "--dyn-tool-call-parser",
                 "harmony", "--dyn-reasoning-parser", "gpt_oss", model_name=HARMONY, system_port=False)
        c.wait_workers(HARMONY, 1, timeout=120)
        yield c


def chat(cluster, budget: int | None = None, vllm_name: bool = False, **kw):
    """With `vllm_name`, the budget goes as vLLM's root `thinking_token_budget` instead of in nvext."""
    extra = None if budget is None else {"thinking_token_budget": budget} if vllm_name else \
        {"nvext": {"max_thinking_tokens": budget}}
    return cluster.openai_client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "case:overthink"}], max_tokens=300, extra_body=extra, **kw)


def reached(cluster) -> float:
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_model_thinking_budget_reached_total", {"model": MODEL}) or 0.0


def test_without_a_budget_the_model_reasons_to_its_own_end(cluster):
    answer = chat(cluster).choices[0].message
    assert answer.reasoning_content.strip() == THOUGHTS.strip()
    assert answer.content == "The answer after all that thought."


def test_a_budget_stops_the_reasoning_and_the_model_answers_from_there(cluster):
    before = reached(cluster)
    full = chat(cluster)
    resp = chat(cluster, BUDGET)
    message = resp.choices[0].message
    thought = message.reasoning_content.strip()
    assert thought and THOUGHTS.startswith(thought) and len(thought) < len(THOUGHTS) / 3
    assert message.content == "The answer within the budget."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens < full.usage.completion_tokens
    cached = resp.usage.prompt_tokens_details.cached_tokens if resp.usage.prompt_tokens_details else 0
    assert (cached or 0) <= resp.usage.prompt_tokens  # the continuation's own cache hit is not the prompt's
    assert reached(cluster) == before + 1


def test_a_streamed_answer_is_cut_the_same_way_under_vllms_field_name(cluster):
    unary = chat(cluster, BUDGET).choices[0].message
    reasoning, content = "", ""
    for chunk in chat(cluster, BUDGET, vllm_name=True, stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert (reasoning, content) == (unary.reasoning_content, unary.content)


def test_anthropic_thinking_budget_is_enforced(cluster):
    client = anthropic.Anthropic(base_url=cluster.base_url, api_key="unused", max_retries=0, timeout=60)
    message = client.messages.create(model=MODEL, max_tokens=300, thinking={"type": "enabled", "budget_tokens": BUDGET},
                                     messages=[{"role": "user", "content": "case:overthink"}])
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text"], kinds
    assert message.content[0].thinking.strip() == chat(cluster, BUDGET).choices[0].message.reasoning_content.strip()
    assert message.content[1].text == "The answer within the budget." and message.stop_reason == "end_turn"
    unbounded = client.messages.create(model=MODEL, max_tokens=300, thinking={"type": "enabled", "budget_tokens": 4096},
                                       messages=[{"role": "user", "content": "case:overthink"}])
    assert unbounded.content[1].text == "The answer after all that thought."


def test_gpt_oss_analysis_is_closed_into_the_final_channel(cluster):
    def ask(budget: int | None):
        extra = {"nvext": {"max_thinking_tokens": budget}} if budget is not None else None
        return cluster.openai_client().chat.completions.create(
            model=HARMONY, messages=[{"role": "user", "content": "case:harmony-overthink"}], max_tokens=300,
            extra_body=extra).choices[0].message

    full, cut = ask(None), ask(BUDGET)
    assert full.reasoning_content.strip() == THOUGHTS.strip() and full.content == "The answer after all that thought."
    thought = cut.reasoning_content.strip()
    assert thought and THOUGHTS.startswith(thought) and len(thought) < len(THOUGHTS) / 3
    assert cut.content == "The answer within the budget."

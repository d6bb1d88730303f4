"""The speculative prefill's pure parts: which requests ask for it, the conversation the next turn
will send (the answer's text and tool calls, not its reasoning), and the warmup request (one token,
routed by the turn's session, never by its worker pin or priority); and a warmup refused for its card."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.openai import decode_request
from dynamo.frontend.responses_request import decode_responses, input_messages
from dynamo.frontend.speculative_prefill import (SpeculativePrefill, chat_answer_history, next_turn_messages, wanted,
                                                 warmup_request)
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import RoutingHints
from dynamo.router.policy import RoundRobinPolicy
from dynamo.runtime.rp_client import RequestPlaneClient


class Card:
    lora_name = "adapter-a"


class Pipeline:
    name = "m"
    card = Card()


@pytest.mark.parametrize("nvext, asked", [
    (None, False), ({}, False), ({"agent_hints": {}}, False), ({"agent_hints": {"speculative_prefill": False}}, False),
    ({"agent_hints": {"speculative_prefill": True, "priority": 2}}, True),
])
def test_wanted(nvext, asked):
    assert wanted(nvext) is asked


def test_a_non_boolean_is_a_400():
    with pytest.raises(ApiError) as err:
        wanted({"agent_hints": {"speculative_prefill": 1}})
    assert err.value.status == 400 and err.value.param == "nvext.agent_hints.speculative_prefill"


def chat_request(messages: list[dict]):
    return decode_request(json.dumps({"model": "m", "messages": messages}).encode(), "chat")


def test_the_next_turn_repeats_the_answer_and_its_tool_calls_without_reasoning():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": '{"path": "."}'}}]
    history = [{"role": "user", "content": "list files"}]
    answer = {"role": "assistant", "content": None, "reasoning_content": "I should call ls", "tool_calls": calls}
    warmed = next_turn_messages(chat_request(history), chat_answer_history(answer))
    # The client's next turn, as it sends the answer back: the warmup is exactly its prefix, arguments
    # converted to objects for the template as the turn's own will be.
    nxt = chat_request([*history, {k: v for k, v in answer.items() if k != "reasoning_content"},
                        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}])
    assert warmed == nxt.message_dicts()[:2]
    assert warmed[-1] == {"role": "assistant", "content": "",
                          "tool_calls": [{**calls[0], "function": {"name": "ls", "arguments": {"path": "."}}}]}
    assert next_turn_messages(chat_request(history), chat_answer_history({"role": "assistant", "content": "hi"})
                              )[-1] == {"role": "assistant", "content": "hi"}


def test_a_responses_turn_is_repeated_as_its_output_items_come_back_in_the_next_input():
    first = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]}]
    output = [{"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "ls"}]},
              {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Listing.", "annotations": []}]},
              {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "ls", "arguments": "{}",
               "status": "completed"}]
    req = decode_responses(json.dumps({"model": "m", "instructions": "be brief", "input": first}).encode()).to_chat()
    warmed = next_turn_messages(req, input_messages(output))
    nxt = decode_responses(json.dumps({"model": "m", "instructions": "be brief", "input": [
        *first, *output, {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"}]}).encode())
    assert warmed == nxt.to_chat().message_dicts()[:len(warmed)]
    assert [m["role"] for m in warmed] == ["system", "user", "assistant", "assistant"]


def test_responses_carry_nvext_to_routing():
    body = {"model": "m", "input": "hi", "nvext": {"agent_hints": {"speculative_prefill": True}}}
    assert wanted(decode_responses(json.dumps(body).encode()).to_chat().nvext)


def test_the_warmup_is_one_token_routed_by_the_session_alone():
    hints = RoutingHints(backend_instance_id=7, priority=5.0, session_id="s", parent_session_id="p",
                         session_control=True, session_ttl_secs=60.0, osl=300)
    req = warmup_request(Pipeline(), [1, 2, 3], hints)
    assert req.token_ids == [1, 2, 3] and req.stop_conditions.max_tokens == 1 and req.lora_name == "adapter-a"
    assert req.routing == RoutingHints(session_id="s", parent_session_id="p", session_control=True)
    assert req.request_id.startswith("specprefill-")
    assert warmup_request(Pipeline(), [1], RoutingHints(backend_instance_id=7)).routing is None
    # In the turn's KV namespace: warmed anywhere else, the next turn would not find it.
    assert warmup_request(Pipeline(), [1], RoutingHints(backend_instance_id=7, cache_salt="t")).routing == \
        RoutingHints(cache_salt="t")


class TemplatePipeline(Pipeline):
    """Renders any chat to the same few ids (the warmup's prefix)."""

    def chat_prompt_ids(self, messages, tools, kwargs, generation_prompt: bool) -> list[int]:
        return [1, 2, 3]


async def test_a_warmup_whose_card_switched_is_counted_as_card_changed():
    """Taken for the old card at `start`, sent once the model is served by another: refused before any worker
    (the Dispatcher's card check), counted apart from the warmups that failed."""
    new = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096, kv_cache_block_size=16)
    new.mdcsum = "new"
    entry = ModelEntry("m", TemplatePipeline(), new)  # type: ignore[arg-type]
    client, pool, registry = RequestPlaneClient(), ThreadPoolExecutor(1), CollectorRegistry()
    try:
        warmups = SpeculativePrefill(Dispatcher(client, RoundRobinPolicy(), 0, FrontendMetrics()), pool, registry, "t")
        req = chat_request([{"role": "user", "content": "hi"}])
        await warmups._warm(entry, ("old", TemplatePipeline()), req, chat_answer_history({"content": "yes"}), None)
    finally:
        await client.close()
        pool.shutdown()
    outcomes = {s.labels["outcome"]: s.value for m in registry.collect() for s in m.samples
                if s.name == "t_speculative_prefills_total"}
    assert outcomes == {"card_changed": 1.0}

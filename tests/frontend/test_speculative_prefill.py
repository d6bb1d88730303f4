"""The speculative prefill's pure parts: which requests ask for it, the conversation the next turn
will send (the answer's text and tool calls, not its reasoning), and the warmup request (one token,
routed by the turn's session, never by its worker pin or priority)."""

from __future__ import annotations

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.speculative_prefill import next_turn_messages, wanted, warmup_request
from dynamo.llm.protocol import RoutingHints


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


def test_the_next_turn_repeats_the_answer_and_its_tool_calls_without_reasoning():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]
    history = [{"role": "user", "content": "list files"}]
    answer = {"role": "assistant", "content": None, "reasoning_content": "I should call ls", "tool_calls": calls}
    assert next_turn_messages(history, answer) == [*history, {"role": "assistant", "content": "", "tool_calls": calls}]
    assert next_turn_messages(history, {"role": "assistant", "content": "hi"})[-1] == {"role": "assistant",
                                                                                       "content": "hi"}


def test_the_warmup_is_one_token_routed_by_the_session_alone():
    hints = RoutingHints(backend_instance_id=7, priority=5.0, session_id="s", parent_session_id="p",
                         session_control=True, session_ttl_secs=60.0, osl=300)
    req = warmup_request(Pipeline(), [1, 2, 3], hints)
    assert req.token_ids == [1, 2, 3] and req.stop_conditions.max_tokens == 1 and req.lora_name == "adapter-a"
    assert req.routing == RoutingHints(session_id="s", parent_session_id="p", session_control=True)
    assert req.request_id.startswith("specprefill-")
    assert warmup_request(Pipeline(), [1], RoutingHints(backend_instance_id=7)).routing is None

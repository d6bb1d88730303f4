"""A Responses stream's output items and their events (frontend/responses_events.py), held to the official
openai SDK's own types: every event validates as its class (text events carry `logprobs`, a call's
`done` its `name`), items come one at a time (each closed before the next opens, as OpenAI streams them),
and the items a stream ends with validate as the unary answer's do."""

from __future__ import annotations

import pytest

from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.parsers import ToolCallDelta
from dynamo.frontend.responses_events import OutputEvents, answer_items
from tests.fixtures.sdk_types import check_event, check_output_item, items_one_at_a_time, sse_events

CALL = [ToolCallDelta(0, "call_1", "get_weather", '{"city": '), ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, "call_2", "get_time", "{}")]
CASES = {
    # Text streamed, then the calls held back and released with the rest of the text (HeldCalls).
    "text-then-calls": [ChoiceDelta("Let me "), ChoiceDelta("check.", "", CALL)],
    "reasoning-then-call": [ChoiceDelta("", "Paris? "), ChoiceDelta("", "Weather."), ChoiceDelta("", "", CALL[:2])],
    "reasoning-then-text": [ChoiceDelta("", "Plan."), ChoiceDelta("Done"), ChoiceDelta(".")],
}
EXPECTED = {"text-then-calls": ["message", "function_call", "function_call"],
            "reasoning-then-call": ["reasoning", "function_call"], "reasoning-then-text": ["reasoning", "message"]}


def run(deltas: list[ChoiceDelta], incomplete: bool = False) -> tuple[list[dict], OutputEvents]:
    events = OutputEvents()
    body = b"".join(events.delta(d) for d in deltas) + events.finish(incomplete)
    return sse_events(body), events


@pytest.mark.parametrize("case", list(CASES))
def test_every_event_is_the_sdks_type_and_items_come_one_at_a_time(case):
    events, framing = run(CASES[case])
    for event in events:
        check_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert items_one_at_a_time(events) == list(range(len(EXPECTED[case])))
    assert [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"] == EXPECTED[case]
    for event in events:
        if event["type"] in ("response.output_text.delta", "response.output_text.done"):
            assert event["logprobs"] == []  # OpenAI sends them always; token logprobs are not offered here
    for item in framing.output():
        assert item["status"] == "completed"
        check_output_item(item)


def test_a_calls_done_event_names_its_function():
    events, _ = run(CASES["text-then-calls"])
    done = [(e["name"], e["arguments"]) for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done == [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]


def test_the_stream_ends_with_the_unary_answers_items():
    events, framing = run(CASES["text-then-calls"])
    message = {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    unary = answer_items(message, "reasoning_content", False)
    for item in unary:
        check_output_item(item)

    def strip(items):
        return [{k: v for k, v in i.items() if k != "id"} for i in items]
    assert strip(framing.output()) == strip(unary)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == framing.output()


def test_nothing_said_is_one_empty_message_and_the_limit_cuts_the_last_item():
    events, framing = run([])
    assert [i["type"] for i in framing.output()] == ["message"] and items_one_at_a_time(events) == [0]
    events, framing = run([ChoiceDelta("", "Thinking."), ChoiceDelta("Cut sh")], incomplete=True)
    assert [(i["type"], i["status"]) for i in framing.output()] == [("reasoning", "completed"),
                                                                    ("message", "incomplete")]
    for event in events:
        check_event(event)

"""A Responses stream's output items and their events (frontend/responses_events.py), held to the official
openai SDK's own types: every event validates as its class (text events carry `logprobs`, a call's
`done` its `name`), items come one at a time (each closed before the next opens, as OpenAI streams them),
and the items a stream ends with validate as the unary answer's do."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dynamo.frontend.choices import Choice, HeldCalls, chat_choice, collect, text_first
from dynamo.frontend.output import ChoiceDelta, is_json
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
            assert event["logprobs"] == []  # OpenAI sends them always: empty unless asked for
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


# An output stage as far as a whole answer and HeldCalls read it: every call's arguments JSON, no call dropped.
STAGE = SimpleNamespace(finish_reason=lambda finish: "tool_calls", filter=SimpleNamespace(dropped=False),
                        tool_input_text=lambda: "")
HELD_CASES = {
    # Call pieces as a parser may send them when calls interleave: call 0, call 1, call 0 again.
    "interleaved-calls": [ChoiceDelta("", "", CALL[:1]), ChoiceDelta("", "", CALL[2:]), ChoiceDelta("", "", CALL[1:2])],
    # Text streamed, then reasoning held with the call (a preamble, then thinking, then the call).
    "late-reasoning": [ChoiceDelta("Let me "), ChoiceDelta("check.", "", CALL[:1]), ChoiceDelta("", "Hmm.", CALL[1:2])],
    "reasoning-held-first": [ChoiceDelta("", "", CALL[:1]), ChoiceDelta("", "Hmm."),
                             ChoiceDelta("Done.", "", CALL[1:])],
}


def streamed_items(deltas: list[ChoiceDelta]) -> tuple[list[dict], list[dict]]:
    """(events, items) of a stream as responses.py sends it: calls held back until the end (HeldCalls)."""
    events, hold = OutputEvents(), HeldCalls(is_json)
    body = b"".join(events.delta(sent) for sent in map(hold.take, deltas) if sent is not None)
    body += b"".join(events.delta(d) for d in hold.release(STAGE)[0]) + events.finish(False)
    return sse_events(body), events.output()


def unary_items(deltas: list[ChoiceDelta]) -> list[dict]:
    choice = Choice(0, STAGE)
    for d in deltas:
        collect(choice, d)
    message = chat_choice(choice, "reasoning_content", None)["message"]
    return answer_items(message, "reasoning_content", False, text_first(choice.content, choice.reasoning))


@pytest.mark.parametrize("case", list(HELD_CASES))
def test_a_stream_whose_calls_were_held_ends_with_the_unary_answers_items(case):
    """Each item opens once (a call whose pieces interleaved too, text held after reasoning too), in the
    unary answer's order."""
    events, items = streamed_items(HELD_CASES[case])
    for event in events:
        check_event(event)
    unary = unary_items(HELD_CASES[case])
    assert items_one_at_a_time(events) == list(range(len(unary)))

    def strip(items):
        return [{k: v for k, v in i.items() if k != "id"} for i in items]
    assert strip(items) == strip(unary)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert all(i["call_id"] and i["name"] for i in added if i["type"] == "function_call")


def test_an_answer_whose_text_began_first_lists_its_message_first():
    assert [i["type"] for i in unary_items(HELD_CASES["late-reasoning"])] == ["message", "reasoning",
                                                                                 "function_call"]
    assert [i["type"] for i in unary_items(CASES["reasoning-then-text"])] == ["reasoning", "message"]

"""Dynamo's early-dispatch events (frontend/stream_dispatch.py): a tool call goes out once, as soon as
its streamed arguments are complete and not before; a reasoning block goes out once, when the answer
moves on from it or ends, under the frontend's reasoning field name."""

from __future__ import annotations

import msgspec

from dynamo.frontend.output import ChoiceDelta
from dynamo.frontend.parsers.base import ToolCallDelta
from dynamo.frontend.stream_dispatch import StreamDispatch


def events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for part in raw.decode().split("\n\n")[:-1]:
        name, data = part.split("\n")
        out.append((name.removeprefix("event: "), msgspec.json.decode(data.removeprefix("data: "))))
    return out


def test_a_call_is_dispatched_once_when_its_arguments_close():
    d = StreamDispatch(tools=True, reasoning=False)
    pieces = [ToolCallDelta(index=0, id="call_1", name="get_weather"), ToolCallDelta(index=0, arguments='{"city": '),
              ToolCallDelta(index=0, arguments='"Paris"'), ToolCallDelta(index=0, arguments="}"),
              ToolCallDelta(index=1, id="call_2", name="get_time", arguments="{}")]
    got = [events(d.events(0, ChoiceDelta(tool_calls=[p]))) for p in pieces]
    assert got[:3] == [[], [], []]  # no name-only or half-written call goes out
    assert got[3] == [("tool_call_dispatch", {"choice_index": 0, "tool_call": {
        "index": 0, "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}})]
    assert got[4][0][1]["tool_call"]["function"] == {"name": "get_time", "arguments": "{}"}
    assert d.events(0, ChoiceDelta(tool_calls=[ToolCallDelta(index=1, arguments=" ")])) == b""  # sent once


def test_a_reasoning_block_goes_out_whole_when_the_answer_moves_on():
    d = StreamDispatch(tools=False, reasoning=True, reasoning_field="reasoning")
    assert d.events(0, ChoiceDelta(reasoning="The user ")) == b""
    assert d.events(1, ChoiceDelta(reasoning="other choice")) == b""
    assert events(d.events(0, ChoiceDelta(reasoning="wants weather.", content="Sure"))) == [
        ("reasoning_dispatch", {"index": 0, "reasoning": "The user wants weather."})]
    assert d.events(0, ChoiceDelta(content=" more")) == b""
    # An answer cut off while reasoning still sends its block when it ends; then nothing is left.
    assert events(d.end_of_reasoning(1)) == [("reasoning_dispatch", {"index": 1, "reasoning": "other choice"})]
    assert d.end_of_reasoning(1) == b""


def test_each_kind_only_when_turned_on():
    tools_only = StreamDispatch(tools=True, reasoning=False)
    assert tools_only.events(0, ChoiceDelta(reasoning="x", content="y")) == b""
    reasoning_only = StreamDispatch(tools=False, reasoning=True)
    call = ToolCallDelta(index=0, id="c", name="f", arguments="{}")
    assert reasoning_only.events(0, ChoiceDelta(tool_calls=[call])) == b""

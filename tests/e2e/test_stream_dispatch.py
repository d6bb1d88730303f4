"""Dynamo's early-dispatch SSE events end to end (`--enable-streaming-tool-dispatch`,
`--enable-streaming-reasoning-dispatch`): a frontend with both flags and a mocker replaying a Qwen3
answer that reasons, then calls two tools (Hermes format), one token per step. The reasoning block
goes out whole as soon as it ends; each call goes out complete ahead of the rest of the answer, the
first before the second is even written."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.tools_model import replaying_cluster

pytestmark = pytest.mark.e2e

MODEL = "dispatcher"
SCRIPTS = {"case:two-calls": ("<think>\nParis weather, then the time.\n</think>\n\n<tool_call>\n"
                              '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
                              '{"name": "get_time", "arguments": {}}\n</tool_call>')}
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
         for name in ("get_weather", "get_time")]


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    flags = ("--enable-streaming-tool-dispatch", "--enable-streaming-reasoning-dispatch")
    with replaying_cluster(tmp_path_factory.mktemp("dispatch"), tiny_model, SCRIPTS, MODEL, *flags) as c:
        yield c


def sse(text: str) -> list[tuple[str | None, dict | str]]:
    """(event name or None, parsed data) of every SSE message, in order."""
    out = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
        data = next((ln[6:] for ln in lines if ln.startswith("data: ")), None)
        if data is not None:
            out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def test_reasoning_and_each_call_are_dispatched_early_and_whole(cluster):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "case:two-calls"}], "tools": TOOLS,
            "stream": True, "max_tokens": 300}
    messages = sse(httpx.post(cluster.base_url + "/v1/chat/completions", json=body, timeout=60).text)
    names = [name for name, _ in messages]
    assert names.count("reasoning_dispatch") == 1 and names.count("tool_call_dispatch") == 2
    reasoning_at = names.index("reasoning_dispatch")
    assert messages[reasoning_at][1] == {"index": 0, "reasoning_content": "\nParis weather, then the time.\n"}
    calls = [(i, data["tool_call"]) for i, (name, data) in enumerate(messages) if name == "tool_call_dispatch"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for _, c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert all(c["id"] and c["type"] == "function" for _, c in calls)
    chunks = [(i, data) for i, (name, data) in enumerate(messages) if name is None and data != "[DONE]"]
    # The reasoning went out before any tool call chunk; the first call before the second call began.
    first_call_chunk = min(i for i, d in chunks if d["choices"] and d["choices"][0]["delta"].get("tool_calls"))
    assert reasoning_at < first_call_chunk
    second_call_starts = min(i for i, d in chunks if d["choices"] and any(
        tc["index"] == 1 for tc in d["choices"][0]["delta"].get("tool_calls") or []))
    assert calls[0][0] < second_call_starts
    assert chunks[-1][1]["choices"][0]["finish_reason"] == "tool_calls"
    # The chunks carry the same answer as without the events.
    assert calls[0][1]["id"] == next(tc["id"] for _, d in chunks if d["choices"]
                                     for tc in d["choices"][0]["delta"].get("tool_calls") or [] if tc.get("id"))


def test_a_unary_answer_has_no_events(cluster):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "case:two-calls"}], "tools": TOOLS}
    resp = httpx.post(cluster.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200 and len(resp.json()["choices"][0]["message"]["tool_calls"]) == 2

"""`nvext.session_control` on a real frontend over two real mocker workers, through the official
`openai` client: a client that asks for affinity in the request body gets it although the frontend
runs without `--router-session-affinity-ttl-secs` (where a session header alone is passive
metadata); `open`/`bind` set the binding's idle timeout, `close` ends it; malformed controls are
400s naming the field (as AIPerf's `dynamo_nvext` session routing sends them)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.test_session_affinity import MODEL, counts, delta
from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("session-control"), tiny_model, "file")
    c.workers = [c.mocker() for _ in range(2)]
    c.frontend("--router-mode", "round-robin")  # no affinity TTL of its own
    c.wait_workers(MODEL, 2)
    try:
        yield c
    finally:
        c.stop()


def ask(client, control: dict | None = None, headers: dict | None = None, text: str = "hello", **nvext) -> str:
    if control is not None:
        nvext["session_control"] = control
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=4,
                                           extra_headers=headers or {}, extra_body={"nvext": nvext} if nvext else None)
    return reply.choices[0].finish_reason


def bound_sessions(c: Cluster) -> int:
    return json.loads(http_get(c.base_url + "/health")[1])["router"]["session_affinity"]["sessions"]


def test_a_session_control_session_stays_while_a_header_session_is_passive(cluster):
    client = cluster.openai_client()
    before = counts(cluster)
    for turn in range(6):
        action = {"action": "open"} if turn == 0 else {}
        assert ask(client, {"session_id": "agent-1", **action}, text=f"turn {turn}") == "length"
    assert sorted(delta(cluster, before)) == [0, 6]
    before = counts(cluster)
    for turn in range(4):  # no TTL on this frontend: a header names the session but binds nothing
        ask(client, headers={"x-dynamo-session-id": "header-only"}, text=f"turn {turn}")
    assert delta(cluster, before) == [2, 2]


def test_close_ends_the_session_and_a_short_timeout_lets_it_go(cluster):
    client = cluster.openai_client()
    base = bound_sessions(cluster)
    ask(client, {"session_id": "closing", "action": "bind", "timeout": 600})
    assert bound_sessions(cluster) == base + 1
    ask(client, {"session_id": "closing", "action": "close"})
    wait_until(lambda: bound_sessions(cluster) == base, 30, "the closed session to go")  # freed as its answer ends
    ask(client, {"session_id": "brief", "action": "open", "timeout": 5})
    assert bound_sessions(cluster) == base + 1
    wait_until(lambda: bound_sessions(cluster) == base, 60, "the 5 s binding to expire")


def test_the_answers_expected_length_is_accepted(cluster):
    assert ask(cluster.openai_client(), agent_hints={"osl": 8, "priority": 1}) == "length"


@pytest.mark.parametrize("control, param", [
    ({"action": "open"}, "nvext.session_control.session_id"),
    ({"session_id": "s", "action": "pause"}, "nvext.session_control.action"),
    ({"session_id": "s", "timeout": 0}, "nvext.session_control.timeout"),
])
def test_a_malformed_session_control_is_a_400(cluster, control, param):
    with pytest.raises(openai.BadRequestError) as err:
        ask(cluster.openai_client(), control)
    assert err.value.status_code == 400 and err.value.body["param"] == param

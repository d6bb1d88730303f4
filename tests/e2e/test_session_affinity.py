"""Session affinity (`--router-session-affinity-ttl-secs`) on a real frontend over two real mocker
workers, through the official `openai` client: an agent session's turns stay on one worker while
requests without a session still round-robin; coding agents' own session headers count; a
session whose worker dies goes on, on the other one; a malformed session header is a 400."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value

pytestmark = pytest.mark.e2e

MODEL = "tiny"


def served(proc) -> int:
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return int(metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0)


def start(tmp, tiny_model, *args: str) -> Cluster:
    c = Cluster(tmp, tiny_model, "file")
    c.workers = [c.mocker() for _ in range(2)]
    c.frontend("--router-mode", "round-robin", "--router-session-affinity-ttl-secs", "60", *args)
    c.wait_workers(MODEL, 2)
    return c


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = start(tmp_path_factory.mktemp("session-affinity"), tiny_model)
    try:
        yield c
    finally:
        c.stop()


def ask(client, headers: dict[str, str] | None = None, text: str = "hello") -> str:
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                           max_tokens=4, extra_headers=headers or {})
    return reply.choices[0].finish_reason


def counts(c: Cluster) -> list[int]:
    return [served(w) for w in c.workers]


def delta(c: Cluster, before: list[int]) -> list[int]:
    return [n - b for n, b in zip(counts(c), before)]


@pytest.mark.parametrize("header", ["x-dynamo-session-id", "x-claude-code-session-id", "session-id"])
def test_a_sessions_turns_stay_on_one_worker(cluster, header):
    client = cluster.openai_client()
    before = counts(cluster)
    for turn in range(6):
        assert ask(client, {header: f"agent-{header}"}, f"turn {turn}") == "length"
    assert sorted(delta(cluster, before)) == [0, 6]
    before = counts(cluster)
    for i in range(4):
        ask(client, text=f"no session {i}")
    assert delta(cluster, before) == [2, 2]  # round-robin as usual without a session


def test_two_sessions_are_spread_and_each_kept(cluster):
    client = cluster.openai_client()
    before = counts(cluster)
    for turn in range(4):
        for session in ("left", "right"):
            ask(client, {"x-dynamo-session-id": session}, f"{session} {turn}")
    assert delta(cluster, before) == [4, 4]  # each session on its own worker, all four turns


def test_health_shows_the_affinity_table(cluster):
    body = json.loads(http_get(cluster.base_url + "/health")[1])
    table = body["router"]["session_affinity"]
    assert table["mode"] == "hard" and table["ttl_secs"] == 60 and table["sessions"] >= 1


def test_a_malformed_session_header_is_a_400(cluster):
    with pytest.raises(openai.BadRequestError) as err:
        ask(cluster.openai_client(), {"x-dynamo-session-id": "x" * 300})
    assert err.value.body["param"] == "x-dynamo-session-id"


def test_a_session_outlives_its_worker(tiny_model, tmp_path):
    """SIGKILL the session's worker: the next turn is served by the other one (migrated, if it was sent
    before the frontend saw the worker go), and the session stays there."""
    c = start(tmp_path, tiny_model, "--migration-limit", "2")
    try:
        client = c.openai_client()
        session = {"x-dynamo-session-id": "survivor"}
        before = counts(c)
        ask(client, session)
        bound = next(w for w, d in zip(c.workers, delta(c, before)) if d == 1)
        other = next(w for w in c.workers if w is not bound)
        bound.kill()
        before_other = served(other)
        for turn in range(3):
            assert ask(client, session, f"turn {turn}") == "length"
        assert served(other) - before_other == 3
    finally:
        c.stop()

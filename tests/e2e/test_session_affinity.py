"""Session affinity (`--router-session-affinity-ttl-secs`) on a real frontend over two real mocker
workers, through the official `openai` client: an agent session's turns stay on one worker while
requests without a session still round-robin; coding agents' own session headers count; a
session whose worker dies goes on, on the other one; a malformed session header is a 400."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

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
        text = http_get(c.base_url + "/metrics")[1].decode()
        assert metric_value(text, "dynamo_frontend_router_session_affinity_lost_total") >= 1
        assert metric_value(text, "dynamo_frontend_router_session_affinity_sessions") == 1
    finally:
        c.stop()


def affinity_health(url: str) -> dict:
    return json.loads(http_get(url + "/health")[1])["router"]["session_affinity"]


def test_two_frontends_share_a_sessions_binding(tiny_model, tmp_path):
    """A session bound by frontend A is kept by frontend B, which had not seen it: B's round-robin
    alone would send it to the other worker (A's first request moved A's turn on, B's has not)."""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.workers = [c.mocker() for _ in range(2)]
        flags = ("--router-mode", "round-robin", "--router-session-affinity-ttl-secs", "60")
        c.frontend(*flags)
        url_a = c.base_url
        c.frontend(*flags)
        url_b = c.base_url
        c.wait_workers(MODEL, 2)
        c.http_port = int(url_a.rsplit(":", 1)[1])
        wait_until(lambda: c.worker_count(MODEL) == 2, 60, "frontend A sees both workers")
        client_a, session = c.openai_client(), {"x-dynamo-session-id": "shared"}
        ask(client_a)  # A's round-robin moves on: the session binds to the second worker
        before = counts(c)
        # Each turn's end tells the replicas (at most once: B may join the event plane after the first).
        wait_until(lambda: ask(client_a, session) and affinity_health(url_b)["sessions"] >= 1, 60,
                   "frontend B hears of the binding")
        on_a = delta(c, before)
        bound = next(i for i, d in enumerate(on_a) if d)
        assert on_a[1 - bound] == 0
        c.http_port = int(url_b.rsplit(":", 1)[1])
        client_b = c.openai_client()
        before = counts(c)
        for turn in range(3):
            ask(client_b, session, f"turn {turn} via B")
        assert delta(c, before)[bound] == 3
        assert affinity_health(url_b)["replica_events_applied"] >= 1
    finally:
        c.stop()

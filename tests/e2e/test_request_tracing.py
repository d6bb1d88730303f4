"""Request tracing with DYN_LOGGING_JSONL=1, on a real frontend and a real mocker worker: every
log line is one JSON object; a request leaves "request received", "http response sent" and
"request completed" lines in the frontend's log and "request received" / "request completed"
in the worker's, found by the client's x-dynamo-request-id and joined by one trace_id (a W3C
traceparent's when the client sends one); the client's x-request-id is echoed and on each line."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.fixtures.procs import http_get, metric_value, mocker_cluster, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    # Real-time mocker: a long answer is still streaming when the client hangs up.
    with mocker_cluster(tmp_path_factory.mktemp("tracing"), tiny_model, "--speedup-ratio", "1",
                        extra_env={"DYN_LOGGING_JSONL": "1"}) as c:
        yield c


def entries(proc) -> list[dict]:
    text = proc.log_path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def about(proc, rid: str) -> list[dict]:
    return [e for e in entries(proc) if rid in json.dumps(e)]


def one(lines: list[dict], message: str) -> dict:
    found = [e for e in lines if e["message"] == message]
    assert len(found) == 1, (message, [e["message"] for e in lines])
    return found[0]


def post(c, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(c.base_url + path, json=body, headers=headers, timeout=60)


def test_a_streamed_request_is_traced_through_frontend_and_worker(cluster):
    rid = str(uuid.uuid4())
    resp = post(cluster, "/v1/chat/completions",
                {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True},
                **{"x-dynamo-request-id": rid, "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
                   "x-request-id": "client-42"})
    assert resp.status_code == 200 and "[DONE]" in resp.text and resp.headers["x-request-id"] == "client-42"
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.worker, rid)), 30,
               "the worker's last line")
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30,
               "the frontend's last line")
    fe = about(cluster.fe, rid)
    received, sent, done = (one(fe, m) for m in ("request received", "http response sent", "request completed"))
    assert (received["level"], received["request_id"], received["model"], received["endpoint"],
            received["request_type"]) == ("INFO", rid, MODEL, "chat_completions", "stream")
    assert (sent["level"], sent["status"]) == ("INFO", "200")
    assert (done["level"], done["status"], done["trace_id"]) == ("INFO", "success", TRACE)
    assert done["elapsed_ms"] > 0
    assert received["x_request_id"] == sent["x_request_id"] == done["x_request_id"] == "client-42"
    worker = about(cluster.worker, rid)
    got, finished = one(worker, "request received"), one(worker, "request completed")
    assert got["trace_id"] == finished["trace_id"] == TRACE and rid in got["request_id"]
    assert (finished["status"], finished["output_tokens"]) == ("success", 5)


def test_a_request_without_ids_gets_fresh_ones(cluster):
    resp = post(cluster, "/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 2})
    assert resp.status_code == 200
    rid = resp.json()["id"].removeprefix("cmpl-")
    assert uuid.UUID(rid)  # the response id names the request id in the logs
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30, "last line")
    received = one(about(cluster.fe, rid), "request received")
    assert len(received["trace_id"]) == 32 and received["endpoint"] == "completions"
    assert "session_id" not in received


def test_an_agent_sessions_requests_carry_its_ids(cluster):
    rid = str(uuid.uuid4())
    resp = post(cluster, "/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 2},
                **{"x-dynamo-request-id": rid, "x-claude-code-session-id": "root-1", "x-claude-code-agent-id": "kid"})
    assert resp.status_code == 200
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30, "last line")
    received = one(about(cluster.fe, rid), "request received")
    assert (received["session_id"], received["parent_session_id"]) == ("kid", "root-1")
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.worker, rid)), 30,
               "the worker's last line")
    assert one(about(cluster.worker, rid), "request received")["session_id"] == "kid"


def test_an_agents_context_is_on_its_received_line_and_a_malformed_one_is_a_400(cluster):
    """nvext.agent_context (Dynamo's passive agent identity): on the frontend's "request received" line."""
    rid = str(uuid.uuid4())
    ctx = {"session_type_id": "deep_research", "session_id": "run-42", "trajectory_id": "run-42:researcher",
           "parent_trajectory_id": "run-42:planner", "trajectory_final": False}
    resp = post(cluster, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                   "max_tokens": 2, "nvext": {"agent_context": ctx}},
                **{"x-dynamo-request-id": rid})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30, "last line")
    assert one(about(cluster.fe, rid), "request received")["agent_context"] == ctx
    bad = post(cluster, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                  "nvext": {"agent_context": {**ctx, "trajectory_id": ""}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "nvext.agent_context.trajectory_id", bad.text


def test_an_unknown_model_is_an_error_line_with_its_type(cluster):
    rid = str(uuid.uuid4())
    resp = post(cluster, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                **{"x-dynamo-request-id": rid})
    assert resp.status_code == 404
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30, "last line")
    fe = about(cluster.fe, rid)
    done, sent = one(fe, "request completed"), one(fe, "http response sent")
    assert (done["level"], done["status"], done["error_type"]) == ("ERROR", "error", "not_found")
    assert "nope" in done["error_detail"]
    assert (sent["level"], sent["status"]) == ("ERROR", "404")


def test_a_request_id_that_is_not_a_uuid_is_ignored_with_a_warning(cluster):
    """As Dynamo 1.6.1: a WARN line, and the request is served under an id made here."""
    resp = post(cluster, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1},
                **{"x-dynamo-request-id": "NOT-A-VALID-UUID", "x-request-id": "bad-uuid-client"})
    assert resp.status_code == 200
    rid = resp.json()["id"].removeprefix("cmpl-")
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 30, "last line")
    warned = one(about(cluster.fe, "bad-uuid-client"),
                 "x-dynamo-request-id header must be a valid UUID, got: NOT-A-VALID-UUID")
    assert (warned["level"], warned["request_id"]) == ("WARN", rid) and uuid.UUID(rid)


def test_a_client_that_hangs_up_leaves_a_cancelled_request(cluster):
    rid = str(uuid.uuid4())
    body = {"model": MODEL, "prompt": "a long answer", "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", cluster.base_url + "/v1/completions", json=body,
                           headers={"x-dynamo-request-id": rid}) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())  # streaming: hang up now
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.worker, rid)), 60,
               "the worker to drop the request")
    wait_until(lambda: any(e["message"] == "request completed" for e in about(cluster.fe, rid)), 60, "last line")
    fe = about(cluster.fe, rid)
    assert one(fe, "request cancelled by client")["level"] == "WARN"
    done = one(fe, "request completed")
    assert (done["level"], done["status"], done["error_type"]) == ("INFO", "cancelled", "cancelled")  # Dynamo's
    assert one(about(cluster.worker, rid), "request completed")["status"] == "cancelled"
    text = http_get(cluster.base_url + "/metrics")[1].decode()  # Dynamo's labels: model, endpoint, request_type
    assert metric_value(text, "dynamo_frontend_model_cancellation_total",
                        {"model": MODEL, "endpoint": "completions", "request_type": "stream"}) >= 1


def test_every_line_either_process_wrote_is_json(cluster):
    for proc in (cluster.fe, cluster.worker):
        assert entries(proc), proc.name  # json.loads raised on any other line
        assert all({"time", "level", "target", "message"} <= set(e) for e in entries(proc))

"""The frontend's and workers' observability surface as NVIDIA Dynamo 1.6.1 shows it, on a real frontend and
real mocker workers: every request that reaches a model route counts once in `requests_total` (refused, failed
mid-stream or served) and in `requests_started_total`, with Dynamo's `status`/`error_type` labels and
`failures_total`; a client's `x-request-id` is echoed and on its log lines; `HEAD /metrics`; the workers'
`worker_id` label; inter-token latency observed once per gap; `DYN_LOG` target directives."""

from __future__ import annotations

import json
import re
import signal

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
REQUEST_LABELS = {"model", "endpoint", "request_type", "status", "error_type"}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    # A real-time mocker: a long answer is still streaming when its client hangs up or its worker dies.
    # DYN_SYSTEM_ENABLED=false beside a port: deprecated in Dynamo 1.6.1, the system server runs all the same.
    c = Cluster(tmp_path_factory.mktemp("accounting"), tiny_model, "file")
    try:
        c.worker = c.mocker("--speedup-ratio", "1", env={"DYN_SYSTEM_ENABLED": "false"})
        c.fe = c.frontend("--router-mode", "round-robin", "--enable-anthropic-api")
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def scrape(url: str) -> str:
    return http_get(url + "/metrics")[1].decode()


def chat(c: Cluster, model: str = MODEL, headers: dict | None = None, **fields) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    return httpx.post(c.base_url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=60)


def requests(text: str, **labels: str) -> float:
    return metric_value(text, "dynamo_frontend_requests_total", labels) or 0.0


def started(text: str, **labels: str) -> float:
    return metric_value(text, "dynamo_frontend_requests_started_total", labels) or 0.0


def failures(text: str, cls: str, reason: str) -> float:
    return metric_value(text, "dynamo_frontend_failures_total", {"class": cls, "reason": reason}) or 0.0


def settled(c: Cluster) -> str:
    """/metrics once no request is in flight: every started request has ended (and been counted)."""
    wait_until(lambda: metric_value(scrape(c.base_url), "dynamo_frontend_inflight_requests") == 0, 30,
               "no request in flight")
    return scrape(c.base_url)


def test_every_refused_request_counts_once_with_dynamos_error_type(cluster):
    before = scrape(cluster.base_url)
    assert chat(cluster, "nope").status_code == 404
    assert chat(cluster, temperature=-3).status_code == 400
    overflow = chat(cluster, messages=[{"role": "user", "content": "hi " * 5000}])  # over the 2,048-token context
    assert overflow.status_code == 400 and overflow.json()["error"]["code"] == "context_length_exceeded"
    not_json = httpx.post(cluster.base_url + "/v1/chat/completions", content=b"{not json", timeout=30)
    assert not_json.status_code == 400
    assert chat(cluster).status_code == 200
    after = settled(cluster)
    unary = {"endpoint": "chat_completions", "request_type": "unary"}
    assert requests(after, model="unknown_model", error_type="not_found", status="error", **unary) == \
        requests(before, model="unknown_model", error_type="not_found", **unary) + 1
    assert requests(after, model=MODEL, error_type="validation", status="error", **unary) == \
        requests(before, model=MODEL, error_type="validation", **unary) + 2
    assert requests(after, model=MODEL, status="success", **unary) == requests(before, model=MODEL, status="success",
                                                                                **unary) + 1
    # A body that is not JSON names no model: a failure only, as in Dynamo.
    assert failures(after, "InvalidRequest", "request.invalid") == failures(before, "InvalidRequest",
                                                                            "request.invalid") + 3
    assert failures(after, "NotFound", "request.not_found") == failures(before, "NotFound", "request.not_found") + 1
    for model in (MODEL, "unknown_model"):
        assert started(after, model=model) == requests(after, model=model) > 0, model


def test_refusals_of_responses_and_messages_requests_count_as_validation_errors(cluster):
    """Their conversion to a chat request and its checks refuse inside the count, as chat's checks do."""
    before = scrape(cluster.base_url)
    bad_item = httpx.post(cluster.base_url + "/v1/responses", json={"model": MODEL, "input": [{"type": "bogus"}]},
                          timeout=30)
    assert bad_item.status_code == 400, bad_item.text
    no_max_tokens = httpx.post(cluster.base_url + "/v1/messages", timeout=30,
                               json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert no_max_tokens.status_code == 400, no_max_tokens.text
    after = settled(cluster)
    for endpoint in ("responses", "messages"):
        labels = {"model": MODEL, "endpoint": endpoint, "request_type": "unary", "error_type": "validation"}
        assert requests(after, status="error", **labels) == requests(before, **labels) + 1, endpoint
        assert started(after, model=MODEL, endpoint=endpoint) == requests(after, model=MODEL, endpoint=endpoint)
    assert failures(after, "InvalidRequest", "request.invalid") == failures(before, "InvalidRequest",
                                                                            "request.invalid") + 2


def test_a_client_that_leaves_while_its_request_waits_for_a_worker_is_cancelled(cluster):
    """--wait-for-workers-secs holds a request for a model with no worker; its client hanging up meanwhile is
    Dynamo's client disconnect (error_type cancelled, no failure), and its last log line says cancelled."""
    port = free_port()
    fe = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port), "--router-mode",
                                           "round-robin", "--wait-for-workers-secs", "60", "--model-name", "ghost"],
                       name="waiting-frontend")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "ghost" in http_get(url + "/v1/models")[1].decode(), 60, "the frontend to expect ghost")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json={"model": "ghost", "prompt": "x", "max_tokens": 2},
                       headers={"x-request-id": "acct-left-1"}, timeout=httpx.Timeout(30, read=1.5))
        wait_until(lambda: requests(scrape(url), model="ghost", error_type="cancelled") == 1, 15,
                   "the abandoned request to be counted")
        text = scrape(url)
        unary = {"model": "ghost", "endpoint": "completions", "request_type": "unary"}
        assert requests(text, status="error", error_type="cancelled", **unary) == 1
        assert requests(text, error_type="internal", **unary) == 0
        assert failures(text, "Internal", "runtime.internal") == 0
        assert started(text, model="ghost") == requests(text, model="ghost") == 1
        def lines() -> list[str]:
            return [line for line in fe.log_path.read_text().splitlines() if "x_request_id=acct-left-1" in line]
        wait_until(lambda: any("request completed" in line for line in lines()), 15, "its last line")
        lines = lines()
        assert any("request cancelled by client" in line for line in lines), lines
        completed = [line for line in lines if "request completed" in line]
        assert len(completed) == 1 and "status=cancelled" in completed[0], lines
    finally:
        fe.stop()


def test_a_stream_its_worker_dies_under_is_an_error_and_so_is_a_model_without_workers(cluster):
    doomed = cluster.mocker("--speedup-ratio", "1", model_name="doomed")
    cluster.wait_workers("doomed", 1)
    body = {"model": "doomed", "messages": [{"role": "user", "content": "a long answer"}], "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    before = scrape(cluster.base_url)
    with httpx.stream("POST", cluster.base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()
        assert resp.status_code == 200 and next(lines).startswith("data:")
        doomed.kill(signal.SIGKILL)
        rest = "\n".join(lines)
    assert '"worker_disconnected"' in rest and rest.rstrip().endswith("data: [DONE]")  # the error event, then DONE
    after = settled(cluster)
    stream = {"model": "doomed", "request_type": "stream"}
    assert requests(after, status="error", error_type="unavailable", **stream) == 1
    assert requests(after, status="success", **stream) == 0
    assert failures(after, "Unavailable", "transport.disconnected") == \
        failures(before, "Unavailable", "transport.disconnected") + 1
    wait_until(lambda: cluster.worker_count("doomed") == 0, 60, "the dead worker to leave discovery")
    assert chat(cluster, "doomed").status_code == 503  # known, no worker: no_workers
    after = settled(cluster)
    assert requests(after, model="doomed", request_type="unary", status="error", error_type="unavailable") == 1
    assert started(after, model="doomed") == requests(after, model="doomed") == 2


def test_a_client_that_hangs_up_is_dynamos_error_of_type_cancelled(cluster):
    before = scrape(cluster.base_url)
    body = {"model": MODEL, "prompt": "a long answer", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", cluster.base_url + "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())  # streaming: hang up now
    after = settled(cluster)
    stream = {"model": MODEL, "endpoint": "completions", "request_type": "stream"}
    assert requests(after, status="error", error_type="cancelled", **stream) == \
        requests(before, error_type="cancelled", **stream) + 1
    assert "# TYPE dynamo_frontend_disconnected_clients gauge" in after
    assert metric_value(after, "dynamo_frontend_disconnected_clients") == \
        (metric_value(before, "dynamo_frontend_disconnected_clients") or 0) + 1
    samples = [line for line in after.splitlines() if line.startswith("dynamo_frontend_requests_total{")]
    assert samples and all(set(re.findall(r'(\w+)="', line)) == REQUEST_LABELS for line in samples)
    assert not any('status="cancelled"' in line for line in samples)  # Dynamo's status: success or error


def test_inter_token_latency_is_observed_once_per_gap_between_batches(cluster):
    def itl_count() -> float:
        return metric_value(scrape(cluster.base_url), "dynamo_frontend_inter_token_latency_seconds_count",
                            {"model": MODEL}) or 0.0
    before = itl_count()
    resp = chat(cluster, max_tokens=16, ignore_eos=True, stream=True, logprobs=True)
    chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    per_chunk = [len((c["choices"][0].get("logprobs") or {}).get("content") or []) for c in chunks]
    assert sum(per_chunk) == 16 and per_chunk[0] >= 1
    settled(cluster)
    # Dynamo: the first batch's tokens have no gap (its time is the TTFT); each later token one observation.
    assert itl_count() == before + 16 - per_chunk[0]


def test_x_request_id_is_echoed_and_on_every_request_line_at_info(cluster):
    ok = chat(cluster, headers={"x-request-id": "acct-ok-1"})
    missing = chat(cluster, "nope", headers={"x-request-id": "acct-404-1"})
    assert (ok.status_code, ok.headers["x-request-id"]) == (200, "acct-ok-1")
    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "acct-404-1")
    assert httpx.get(cluster.base_url + "/v1/models", headers={"x-request-id": "m-1"}).headers["x-request-id"] == "m-1"

    def lines(rid: str) -> list[str]:
        return [line for line in cluster.fe.log_path.read_text().splitlines() if f"x_request_id={rid}" in line]
    wait_until(lambda: any("request completed" in line for line in lines("acct-404-1")), 30, "the 404's last line")
    assert [m for m in ("request received", "http response sent", "request completed")
            if any(f" INFO dynamo.request: {m} " in line for line in lines("acct-ok-1"))] == \
        ["request received", "http response sent", "request completed"]  # a default text log has them, INFO
    assert any("ERROR dynamo.request: request completed" in line and "error_type=not_found" in line
               for line in lines("acct-404-1"))


def test_a_non_uuid_dynamo_request_id_is_ignored_with_a_warning(cluster):
    resp = chat(cluster, headers={"x-dynamo-request-id": "not-a-uuid", "x-request-id": "acct-bad-id"})
    assert resp.status_code == 200
    wait_until(lambda: "x_request_id=acct-bad-id" in cluster.fe.log_path.read_text(), 30, "its lines")
    warned = [line for line in cluster.fe.log_path.read_text().splitlines()
              if "x-dynamo-request-id header must be a valid UUID, got: not-a-uuid" in line]
    assert len(warned) == 1 and " WARNING " in warned[0]


def test_head_metrics_and_the_workers_dynamo_labels(cluster):
    for url in (cluster.base_url, f"http://127.0.0.1:{cluster.worker.system_port}"):
        head = httpx.head(url + "/metrics", timeout=10)
        assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/")
    health = json.loads(http_get(cluster.base_url + "/health")[1])
    instance = next(i["instance_id"] for i in health["instances"] if i["model"] == MODEL)
    text = scrape(f"http://127.0.0.1:{cluster.worker.system_port}")
    generate = {"dynamo_endpoint": "generate", "worker_id": format(instance, "x")}
    assert metric_value(text, "dynamo_component_requests_total", generate) > 0
    assert metric_value(text, "dynamo_component_cancellation_total", generate) is not None
    assert metric_value(text, "dynamo_component_uptime_seconds", {"worker_id": format(instance, "x")}) > 0
    samples = [line for line in text.splitlines() if line.startswith("dynamo_component_requests_total{")]
    assert samples and all("worker_id=" in line and "status=" not in line for line in samples)
    assert "DYN_SYSTEM_ENABLED is deprecated" in cluster.worker.log_path.read_text()


def test_dyn_log_target_directives_select_the_request_lines(cluster):
    """`warn,dynamo_llm::http::service::metrics=info`: Dynamo's request lines at INFO, everything else at WARN."""
    port = free_port()
    fe = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port), "--router-mode",
                                           "round-robin"], {"DYN_LOG": "warn,dynamo_llm::http::service::metrics=info"},
                       name="quiet-frontend")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: MODEL in http_get(url + "/v1/models")[1].decode(), 60, "the second frontend to serve")
    assert httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                      timeout=60).status_code == 200
    wait_until(lambda: "request completed" in fe.log_path.read_text(), 30, "its request lines")
    infos = [line for line in fe.log_path.read_text().splitlines() if " INFO " in line]
    assert infos and all(" INFO dynamo.request: " in line for line in infos), infos[:3]
    fe.stop()

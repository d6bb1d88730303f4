"""Frontend features beyond the basic flow: metrics names, namespace scoping, TLS."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import openai
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("extras"), tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "100")
        c.elsewhere = c.mocker("--speedup-ratio", "100", model_name="elsewhere",  # type: ignore[attr-defined]
                               env={"DYN_NAMESPACE": "other"})
        c.frontend("--namespace", "dynamo")
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def test_metrics_use_dynamo_names(cluster):
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    # Dynamo's ITL is observed for the batches after the first: a fast worker's short stream can reach a loaded
    # frontend as one batch (none observed), so stream until one comes in two (a missing ITL still fails below)
    for _ in range(20):
        list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=32, stream=True))
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        if metric_value(text, "dynamo_frontend_inter_token_latency_seconds_count", {"model": MODEL}):
            break
    status, body = http_get(cluster.base_url + "/metrics")
    text = body.decode()
    assert status == 200
    assert metric_value(text, "dynamo_frontend_requests_total", {"model": MODEL, "status": "success"}) >= 2
    assert metric_value(text, "dynamo_frontend_requests_total", {"request_type": "stream"}) >= 1
    assert metric_value(text, "dynamo_frontend_inflight_requests", {"model": MODEL}) == 0
    for name in ("dynamo_frontend_time_to_first_token_seconds_count", "dynamo_frontend_inter_token_latency_seconds_count",
                 "dynamo_frontend_request_duration_seconds_count", "dynamo_frontend_input_sequence_tokens_count",
                 "dynamo_frontend_output_sequence_tokens_sum"):
        assert metric_value(text, name, {"model": MODEL}) > 0, name
    assert metric_value(text, "dynamo_frontend_model_workers", {"model": MODEL}) == 1
    # Dynamo's: tokens counted as they are sent (a rate during long streams), and the engines' batch limits
    sent = metric_value(text, "dynamo_frontend_output_tokens_total", {"model": MODEL})
    assert sent == metric_value(text, "dynamo_frontend_output_sequence_tokens_sum", {"model": MODEL}) >= 2
    assert metric_value(text, "dynamo_frontend_model_max_num_seqs", {"model": MODEL}) == 256  # the mocker's default
    assert metric_value(text, "dynamo_frontend_model_max_num_batched_tokens", {"model": MODEL}) == 8192


def test_dynamos_stage_metrics(cluster):
    """Dynamo's pipeline-stage series: each request preprocessed (template and tokenizer timed), routed and
    dispatched once, its transport round trip observed, and no request left in any stage afterwards."""
    def scrape() -> str:
        return http_get(cluster.base_url + "/metrics")[1].decode()

    def count(text: str, name: str, labels: dict | None = None) -> float:
        return metric_value(text, name, labels) or 0.0
    series = [("dynamo_frontend_stage_duration_seconds_count", {"stage": "preprocess"}),
              ("dynamo_frontend_stage_duration_seconds_count", {"stage": "route"}),
              ("dynamo_frontend_stage_duration_seconds_count", {"stage": "transport_roundtrip"}),
              ("dynamo_frontend_template_seconds_count", None), ("dynamo_frontend_tokenize_seconds_count", None),
              ("dynamo_frontend_tokenizer_latency_ms_count", {"operation": "tokenize"})]
    before = scrape()
    client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0)
    for stream in (False, True):
        resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "stage"}],
                                              max_tokens=3, stream=stream)
        list(resp) if stream else None
    after = scrape()
    for name, labels in series:
        assert count(after, name, labels) - count(before, name, labels) == 2, (name, labels)
    for stage, phase in (("preprocess", ""), ("route", "aggregated"), ("dispatch", "aggregated")):
        assert metric_value(after, "dynamo_frontend_stage_requests", {"stage": stage, "phase": phase}) == 0


def test_namespace_scopes_discovery(cluster):
    # The other namespace's worker is really registered (its card is in the store) ...
    other = cluster.tmp / "kv" / "v1" / "mdc" / "other"
    wait_until(lambda: any(p.is_file() for p in other.rglob("*")), 60, "the 'other' namespace worker's card")
    wait_until(lambda: http_get(f"http://127.0.0.1:{cluster.elsewhere.system_port}/health")[0] == 200, 60,
               "the 'other' namespace worker healthy")
    # ... and still this frontend neither lists nor serves it.
    wait_until(lambda: cluster.models() == [MODEL], 20, "models list")
    resp = httpx.post(cluster.base_url + "/v1/completions", json={"model": "elsewhere", "prompt": "x"}, timeout=30)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert cluster.models() == [MODEL]


def test_health_lists_instances(cluster):
    status, body = http_get(cluster.base_url + "/health")
    import json

    data = json.loads(body)
    assert status == 200 and data["status"] == "healthy"
    assert data["endpoints"] == ["dyn://dynamo.backend.generate"]
    assert len(data["instances"]) == 1


def test_tls(tiny_model, tmp_path, cluster):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--tls-cert-path", str(cert), "--tls-key-path", str(key)])
    url = f"https://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/v1/models", verify=False).json()["data"], 60, "TLS frontend with model")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(cert))))
    resp = client.completions.create(model=MODEL, prompt="secure", max_tokens=3)
    assert resp.usage.completion_tokens == 3
    proc.stop()


def _self_signed(tmp_path, name: str, cn: str) -> tuple[str, str]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={cn}", "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    return str(cert), str(key)


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(tmp_path, cluster):
    """--tls-client-ca-cert-path (Dynamo's flag): the handshake needs a client certificate the CA signed."""
    cert, key = _self_signed(tmp_path, "server", "127.0.0.1")
    client_cert, client_key = _self_signed(tmp_path, "client", "a-client")  # self-signed: its own CA
    stranger = _self_signed(tmp_path, "stranger", "someone-else")
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--tls-cert-path", cert, "--tls-key-path", key,
                                             "--tls-client-ca-cert-path", client_cert])
    url = f"https://127.0.0.1:{port}"

    def context(pair=None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=cert)
        if pair is not None:
            ctx.load_cert_chain(*pair)
        return ctx

    try:
        wait_until(lambda: httpx.get(url + "/v1/models", verify=context((client_cert, client_key))).json()["data"],
                   60, "mutual-TLS frontend with model")
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                               http_client=httpx.Client(verify=context((client_cert, client_key))))
        assert client.completions.create(model=MODEL, prompt="trusted", max_tokens=2).usage.completion_tokens == 2
        for pair in (None, stranger):  # no certificate, or one the CA did not sign
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                httpx.get(url + "/v1/models", verify=context(pair)).raise_for_status()
    finally:
        proc.stop()


def test_tls_flags_must_come_together(tmp_path):
    result = subprocess.run([__import__("sys").executable, "-m", "dynamo.frontend", "--tls-cert-path", "x.pem"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "must be given together" in result.stderr


@pytest.mark.parametrize("argv,env,said", [
    (["--http-port", "99999"], {}, "--http-port / DYN_HTTP_PORT must be a TCP port, 0-65535 (got 99999)"),
    ([], {"DYN_HTTP_PORT": "-5"}, "--http-port / DYN_HTTP_PORT must be a TCP port, 0-65535 (got -5)"),
    (["--tls-cert-path", "/nonexistent/c", "--tls-key-path", "/nonexistent/k"], {},
     "--tls-cert-path / DYN_TLS_CERT_PATH: /nonexistent/c: no such file"),
])
def test_a_setting_that_cannot_serve_stops_the_start_with_one_line(tmp_path, argv, env, said):
    """Never served on another port (99999 once wrapped around to 34463), nor "cannot listen on ..." for a
    missing certificate: exit 2 at once, the last line naming the setting."""
    import os
    import sys

    environ = {**{k: v for k, v in os.environ.items() if k != "DYN_HTTP_PORT"}, "DYN_FILE_KV": str(tmp_path / "kv"),
               **env}
    result = subprocess.run([sys.executable, "-m", "dynamo.frontend", *argv], capture_output=True, text=True,
                            timeout=60, env=environ)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(said)
    assert "Traceback" not in result.stderr and "ready on" not in result.stderr


def test_a_process_that_cannot_listen_exits_and_says_why_in_one_line(cluster):
    """A taken HTTP port: the frontend exits 1, a worker whose system port is taken exits 3 (as
    uvicorn's startup failure does), each with a line naming the address and no traceback."""
    taken = cluster.http_port  # the module's frontend holds it
    frontend = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(taken)])
    assert frontend.popen.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{taken}" in frontend.log() and "Traceback" not in frontend.log()
    worker = cluster.start("dynamo.mocker", ["--model-path", str(cluster.model_dir), "--model-name", "unbound"],
                           env={"DYN_SYSTEM_PORT": str(taken)})
    assert worker.popen.wait(60) == 3
    assert f"cannot bind 0.0.0.0:{taken}" in worker.log() and "Traceback" not in worker.log()


@pytest.mark.parametrize("path, says", [("/v1/classify", "serves no classify"), ("/v1/pooling", "serves no pooling"),
                                        ("/v1/embeddings", "serves no embeddings")])
def test_pooling_routes_of_a_generation_model_are_not_found(cluster, path, says):
    resp = httpx.post(cluster.base_url + path, json={"model": MODEL, "input": "hello"}, timeout=30)
    assert resp.status_code == 404 and says in resp.json()["error"]["message"]
    bad = httpx.post(cluster.base_url + path, json={"model": MODEL, "input": []}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"

"""The KServe v2 gRPC frontend (`--kserve-grpc-server`) with Triton's official gRPC client
(`tritonclient.grpc`) against a real frontend and a mocker worker: gRPC on the frontend's port, the HTTP
routes on `--grpc-metrics-port`; ModelInfer answers what /v1/completions answers for the same prompt,
ModelStreamInfer streams chunks of several requests at once, metadata and config describe the tensors,
and refusals are the gRPC statuses Dynamo gives them."""

from __future__ import annotations

import queue
import time
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.fixtures.pki import make_pki
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model):
    cluster = Cluster(tmp_path_factory.mktemp("kserve"), tiny_model)
    try:
        cluster.mocker("--speedup-ratio", "10")
        grpc_port, cluster.http_port = free_port(), free_port()
        cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(grpc_port),
                                          "--kserve-grpc-server", "--grpc-metrics-port", str(cluster.http_port)],
                      env={"DYN_LOGGING_JSONL": "1"})  # its request lines, at INFO
        wait_until(lambda: http_get(cluster.base_url + "/live")[0] == 200, 60, "frontend /live on the metrics port")
        cluster.wait_workers("tiny", 1)
        cluster.grpc_port = grpc_port  # type: ignore[attr-defined]
        yield cluster, f"127.0.0.1:{grpc_port}"
    finally:
        cluster.stop()


@pytest.fixture()
def client(stack):
    with grpcclient.InferenceServerClient(stack[1]) as c:
        yield c


def inputs(prompt: str, stream: bool | None = None, name: str = "text_input") -> list:
    text = grpcclient.InferInput(name, [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    if stream is None:
        return [text]
    flag = grpcclient.InferInput("streaming", [1], "BOOL")
    flag.set_data_from_numpy(np.array([stream], dtype=bool))
    return [text, flag]


def texts(result, name: str = "text_output") -> list[str]:
    return [x.decode() for x in result.as_numpy(name)]


def test_server_and_model_state(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and not client.is_model_ready("no-such-model")
    assert client.get_server_metadata().name == "dynamo"


def test_metadata_and_config_describe_the_tensors(client):
    meta = client.get_model_metadata("tiny")
    assert meta.name == "tiny" and meta.platform == "dynamo" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text_input", "BYTES", [1]),
                                                                          ("streaming", "BOOL", [1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("text_output", "BYTES", [-1]),
                                                                           ("finish_reason", "BYTES", [-1])]
    config = client.get_model_config("tiny", as_json=True)["config"]
    assert config["name"] == "tiny" and config["backend"] == "dynamo" and config["platform"] == "dynamo"
    assert [(i["name"], i["data_type"]) for i in config["input"]] == [("text_input", "TYPE_STRING"),
                                                                       ("streaming", "TYPE_BOOL")]
    assert config["input"][1].get("optional") is True and not config["input"][0].get("optional")
    for call in (client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as err:
            call("no-such-model")
        assert err.value.status() == "StatusCode.NOT_FOUND"


def test_infer_answers_what_completions_answers(stack, client):
    cluster, _ = stack
    result = client.infer("tiny", inputs("The capital of France is"), request_id="r-1",
                          parameters={"max_tokens": 6, "temperature": 0.0})
    assert result.get_response().id == "r-1" and result.get_response().model_name == "tiny"
    expected = cluster.openai_client().completions.create(model="tiny", prompt="The capital of France is",
                                                          max_tokens=6, temperature=0.0)
    assert texts(result) == [expected.choices[0].text] and texts(result, "finish_reason") == ["length"]
    assert expected.choices[0].text  # a real answer, not two empty strings agreeing


@pytest.mark.parametrize("tensors, parameters, says", [
    (lambda: inputs("hi", stream=True), {}, "Streaming is not supported for this endpoint"),
    (lambda: inputs("hi", name="prompt"), {}, "Invalid input name: prompt"),
    (lambda: inputs("hi"), {"max_tokens": "many"}, "parameter 'max_tokens' must be a int64"),
    (lambda: inputs("hi"), {"max_tokens": 0}, "max_tokens"),
    (lambda: inputs("word " * 5000), {"max_tokens": 4}, "context"),
    # over JSON_SLICE_BYTES: written into its payload a slice at a time, refused all the same
    (lambda: inputs("word " * 400_000), {"max_tokens": 4}, "context"),
    (lambda: [*inputs("hi"), *inputs("there")], {}, "input 'text_input' already exists in request"),
])
def test_refusals_are_invalid_argument(client, tensors, parameters, says):
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", tensors(), parameters=parameters)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and says in err.value.message()


def test_a_uuid_id_and_the_calls_metadata_reach_the_request_log(stack, client):
    """As over HTTP: the call's metadata are the request's headers (here the session id), and an `id` that is
    a UUID is the request id the frontend's logs carry (NVIDIA Dynamo takes it so)."""
    cluster, _ = stack
    rid = str(uuid.uuid4())
    client.infer("tiny", inputs("find me"), request_id=rid, parameters={"max_tokens": 2},
                 headers={"x-dynamo-session-id": "grpc-session-7"})
    frontend = next(p for p in cluster.procs if p.name.startswith("frontend"))
    wait_until(lambda: any(rid in line and "grpc-session-7" in line for line in frontend.log().splitlines()), 10,
               "the request's log line")


def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as err:
        client.infer("no-such-model", inputs("hi"))
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_a_version_the_model_lacks_is_not_found_and_not_ready(client):
    """Triton's reading of `model_version`: the versions listed ("1"), or none named; another is not found."""
    assert client.is_model_ready("tiny", "1") and not client.is_model_ready("tiny", "2")
    assert texts(client.infer("tiny", inputs("hi"), model_version="1", parameters={"max_tokens": 2}))
    for call in (lambda: client.infer("tiny", inputs("hi"), model_version="2"),
                 # the version first, as Triton: a request it would refuse as well is still not found
                 lambda: client.infer("tiny", inputs("hi", name="prompt"), model_version="2"),
                 lambda: client.get_model_metadata("tiny", "2"), lambda: client.get_model_config("tiny", "2")):
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == "StatusCode.NOT_FOUND" and "'tiny' version 2 is not found" in err.value.message()


def test_an_output_the_model_does_not_answer_is_refused(client):
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", inputs("hi"), outputs=[grpcclient.InferRequestedOutput("logits")])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected inference output 'logits' for model 'tiny'" in err.value.message()
    answered = client.infer("tiny", inputs("hi"), outputs=[grpcclient.InferRequestedOutput("text_output")],
                            parameters={"max_tokens": 2})
    assert texts(answered)


def test_bytes_that_are_no_infer_request_are_invalid_argument(stack):
    channel = grpc.insecure_channel(stack[1])
    try:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as err:
            infer(b"\xff\xff\xff", timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in err.value.details()
    finally:
        channel.close()


def test_stream_runs_requests_side_by_side(client):
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("tiny", inputs("one two three", stream=True), request_id="a",
                                  parameters={"max_tokens": 5})
        client.async_stream_infer("tiny", inputs("four five six", stream=False), request_id="b",
                                  parameters={"max_tokens": 3})
        client.async_stream_infer("tiny", inputs("x", name="bogus"), request_id="c")
        by_id: dict[str, list] = {"a": [], "b": []}
        errors = []
        deadline = time.monotonic() + 60
        while not (errors and any(texts(r, "finish_reason")[0] for r in by_id["a"]) and by_id["b"]):
            result, error = results.get(timeout=max(0.1, deadline - time.monotonic()))
            if error is not None:
                errors.append(error)
            else:
                by_id[result.get_response().id].append(result)
    finally:
        client.stop_stream()
    assert len(errors) == 1 and "Invalid input name: bogus" in str(errors[0])
    assert len(by_id["a"]) >= 2  # a response per chunk; the last one says why it ended
    assert [texts(r, "finish_reason")[0] for r in by_id["a"]][-1] == "length"
    assert all(texts(r, "finish_reason") == [""] for r in by_id["a"][:-1])
    assert "".join(texts(r)[0] for r in by_id["a"]) != ""
    assert len(by_id["b"]) == 1 and texts(by_id["b"][0], "finish_reason") == ["length"]


def test_grpc_requests_count_in_the_frontends_metrics(stack, client):
    cluster, _ = stack

    def served() -> float:
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        return metric_value(text, "dynamo_frontend_requests_total",
                            {"model": "tiny", "endpoint": "completions", "status": "success"}) or 0.0
    before = served()
    client.infer("tiny", inputs("count me"), parameters={"max_tokens": 2})
    wait_until(lambda: served() == before + 1, 10, "the request counted")


def test_a_stream_the_client_cancels_stops_its_requests(stack, client):
    """Cancelling the gRPC stream is a client going away: the frontend stops the request (and its worker's
    stream) instead of generating the rest for nobody; it counts as cancelled, not as served."""
    cluster, _ = stack
    results: queue.Queue = queue.Queue()

    def metric(name: str, **labels) -> float:
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        return metric_value(text, name, {"model": "tiny", **labels}) or 0.0
    cancelled = metric("dynamo_frontend_requests_total", endpoint="completions", error_type="cancelled")
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("tiny", inputs("a long story", stream=True), request_id="long",
                              parameters={"max_tokens": 2000, "ignore_eos": True})
    result, error = results.get(timeout=60)  # it runs: its first chunk arrived
    assert error is None and texts(result, "finish_reason") == [""], error and error.message()
    client.stop_stream(cancel_requests=True)
    wait_until(lambda: metric("dynamo_frontend_inflight_requests") == 0, 30, "the cancelled request to end")
    assert metric("dynamo_frontend_requests_total", endpoint="completions", error_type="cancelled") == cancelled + 1


def test_tls_with_a_client_certificate(stack, tmp_path):
    """With the frontend's certificate (and a client CA: mutual TLS) the gRPC server speaks TLS; a client
    without a certificate the CA signed is refused."""
    cluster, _ = stack
    pki = make_pki(tmp_path)
    port, http_port = free_port(), free_port()
    proc = cluster.start("dynamo.frontend", [
        "--http-host", "127.0.0.1", "--http-port", str(port), "--kserve-grpc-server", "--grpc-metrics-port",
        str(http_port), "--tls-cert-path", pki["cert"], "--tls-key-path", pki["key"],
        "--tls-client-ca-cert-path", pki["ca"]])
    try:
        secure = dict(ssl=True, root_certificates=pki["ca"])
        with grpcclient.InferenceServerClient(f"127.0.0.1:{port}", private_key=pki["client_key"],
                                              certificate_chain=pki["client_cert"], **secure) as c:
            wait_until(lambda: _ready(c), 60, "the TLS gRPC frontend to serve tiny")
            result = c.infer("tiny", inputs("secure"), parameters={"max_tokens": 3})
            assert texts(result, "finish_reason") == ["length"]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{port}", **secure) as stranger:
            with pytest.raises(InferenceServerException):
                stranger.is_server_live()
    finally:
        proc.stop()


def _ready(client) -> bool:
    try:
        return client.is_model_ready("tiny")
    except InferenceServerException:
        return False


def test_a_taken_grpc_port_is_an_exit_that_says_so(stack):
    """The gRPC port held (by the module's frontend): a second frontend exits 1 naming it, no traceback."""
    cluster, _ = stack
    taken = cluster.grpc_port
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(taken),
                                             "--kserve-grpc-server", "--grpc-metrics-port", str(free_port())])
    assert proc.popen.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{taken}" in proc.log() and "Traceback" not in proc.log()

"""The KServe gRPC stream's write deadline (`--http-write-timeout-secs`): a client that opens a
ModelStreamInfer, sends requests and then reads nothing (nor hangs up) has its stream cut once HTTP/2 flow
control has held a response back for the timeout; its requests end as cancelled, as for a client gone,
instead of running on for nobody with their responses queued in the frontend."""

from __future__ import annotations

import grpc
import pytest
import tritonclient.grpc.service_pb2 as pb
import tritonclient.grpc.service_pb2_grpc as pb_grpc

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def stream_request(rid: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny", id=rid)
    text = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"tell a long story " * 4)
    flag = req.inputs.add(name="streaming", datatype="BOOL", shape=[1])
    flag.contents.bool_contents.append(True)
    req.parameters["max_tokens"].int64_param = 1500
    req.parameters["ignore_eos"].bool_param = True
    return req


def test_a_stream_whose_client_stops_reading_is_cut(tiny_model, tmp_path):
    cluster = Cluster(tmp_path, tiny_model)
    channel = None
    try:
        cluster.mocker()  # real time: its streams outlast the deadline
        grpc_port, cluster.http_port = free_port(), free_port()
        frontend = cluster.start("dynamo.frontend", [
            "--http-host", "127.0.0.1", "--http-port", str(grpc_port), "--kserve-grpc-server",
            "--grpc-metrics-port", str(cluster.http_port), "--http-write-timeout-secs", "2"])
        wait_until(lambda: http_get(cluster.base_url + "/live")[0] == 200, 60, "frontend /live")
        cluster.wait_workers("tiny", 1)

        def metric(name: str, **labels) -> float:
            text = http_get(cluster.base_url + "/metrics")[1].decode()
            return metric_value(text, name, {"model": "tiny", **labels}) or 0.0

        # No BDP probing: the client's flow-control window stays at its 64 KiB start, which the stream fills.
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.http2.bdp_probe", 0)])
        responses = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            iter([stream_request(f"r{i}") for i in range(4)]))
        wait_until(lambda: metric("dynamo_frontend_inflight_requests") == 4, 60, "the 4 requests running")
        wait_until(lambda: "stream cut" in frontend.log_path.read_text(), 120, "the stalled stream cut")
        wait_until(lambda: metric("dynamo_frontend_inflight_requests") == 0, 30, "its requests ended")
        assert metric("dynamo_frontend_requests_total", endpoint="completions", error_type="cancelled") == 4
        with pytest.raises(grpc.RpcError):
            for _ in responses:  # what was buffered for the client, then the cut
                pass
    finally:
        if channel is not None:
            channel.close()
        cluster.stop()

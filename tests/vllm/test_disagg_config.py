"""dynamo.vllm.disagg without an engine: transport choice, transfer-parameter annotation
and the connector stats feeding the worker's metrics (runs in the main venv)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from dynamo.vllm import disagg
from tests.fixtures.procs import metric_value


def metrics_text(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_agg_worker_without_user_config_is_left_alone():
    # Stand-in for vLLM's engine args (the two fields `configure` reads); the real ones: tests/vllm/test_disagg_tcp.py.
    args = SimpleNamespace(kv_transfer_config=None, enable_prefix_caching=None)
    assert disagg.configure(args, "agg", "auto", "file") is None
    assert args.kv_transfer_config is None and args.enable_prefix_caching is None


def test_user_tcp_connector_config_gets_its_module_path():
    # Stand-in for vLLM's `KVTransferConfig` (the two fields `configure` reads and fills); a
    # real one is built from --kv-transfer-config by the workers of tests/vllm/test_disagg_tcp.py.
    user = SimpleNamespace(kv_connector="DynamoTcpConnector", kv_connector_module_path=None)
    setup = disagg.configure(SimpleNamespace(kv_transfer_config=user), "decode", "nixl", "file")
    assert setup.transport == "tcp" and setup.reason == "from --kv-transfer-config"
    assert user.kv_connector_module_path == "dynamo.vllm.tcp_connector"


def test_annotate_adds_transport_and_bytes_and_counts_them():
    registry = CollectorRegistry()
    xfer = disagg.TransferMetrics(registry, disagg.DisaggSetup("nixl", "NixlConnector", "test"), bytes_per_block=100)
    out = xfer.annotate({"do_remote_prefill": True, "remote_block_ids": [[1, 2, 3]]})
    assert out["transport"] == "nixl" and out["kv_bytes"] == 300
    assert xfer.annotate({"remote_block_ids": [7], "kv_bytes": 5, "transport": "tcp"})["transport"] == "tcp"
    text = metrics_text(registry)
    assert metric_value(text, "dynamo_component_kv_transfer_bytes_total", {"direction": "sent"}) == 305
    assert metric_value(text, "dynamo_component_kv_transfer_transport", {"transport": "nixl"}) == 1


def test_connector_stats_feed_received_bytes_seconds_and_failures():
    registry = CollectorRegistry()
    xfer = disagg.TransferMetrics(registry, disagg.DisaggSetup("tcp", "DynamoTcpConnector", "test"), 0)
    xfer.observe_connector_stats({"bytes_transferred": [1000, 24], "transfer_duration": [0.01, 0.02],
                                  "num_failed_transfers": [1]})
    text = metrics_text(registry)
    assert metric_value(text, "dynamo_component_kv_transfer_bytes_total", {"direction": "received"}) == 1024
    assert metric_value(text, "dynamo_component_kv_transfer_seconds_count") == 2
    assert metric_value(text, "dynamo_component_kv_transfer_failures_total") == 1

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


def user_config(**extra):
    # Stand-in for vLLM's `KVTransferConfig` (the fields `configure` reads and fills); the real one, from
    # --kv-transfer-config, in tests/vllm/test_vllm_objects.py and the workers of tests/vllm/test_disagg_tcp.py.
    return SimpleNamespace(kv_connector="DynamoTcpConnector", kv_role="kv_both", kv_connector_module_path=None,
                           kv_connector_extra_config=dict(extra))


def test_user_tcp_connector_config_gets_what_the_tcp_backend_gives():
    """Module path and a pull endpoint (the advertised host, a free port), as `--kv-transfer-backend tcp`:
    without a port the prefill side would advertise port 0 and hand over nothing."""
    user = user_config()
    setup = disagg.configure(SimpleNamespace(kv_transfer_config=user), "decode", "nixl", "file")
    assert setup.transport == "tcp" and setup.reason == "from --kv-transfer-config"
    assert user.kv_connector_module_path == "dynamo.vllm.tcp_connector"
    extra = user.kv_connector_extra_config
    assert (extra["host"], extra["bind_host"]) == ("127.0.0.1", "127.0.0.1") and extra["port"] > 0


def test_what_the_user_set_in_the_tcp_connector_config_is_kept():
    user = user_config(host="10.0.0.7", port=29123, ttl_s=5)
    disagg.configure(SimpleNamespace(kv_transfer_config=user), "prefill", "auto", "file")
    assert user.kv_connector_extra_config == {"host": "10.0.0.7", "bind_host": "127.0.0.1", "port": 29123,
                                              "ttl_s": 5}


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

"""`dynamo.vllm` argument parsing and pure mappings, in the main venv (no vLLM needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dynamo.vllm.args import build_parser, split_namespace
from dynamo.vllm.events import EngineStats, is_bind_endpoint, subscriber_address
from dynamo.vllm.handler import finish_reason

MANIFEST_ARGS = [
    "--model", "Qwen/Qwen3-0.6B", "--served-model-name", "qwen", "--tensor-parallel-size", "2", "-pp", "1",
    "--block-size", "64", "--enable-prefix-caching", "--max-model-len", "4096", "--enforce-eager",
    "--dtype", "bfloat16", "--gpu-memory-utilization", "0.85", "--max-num-seqs", "64",
    "--kv-events-config", '{"publisher":"zmq","topic":"kv-events","endpoint":"tcp://*:20080",'
                          '"enable_kv_cache_events":true}',
    "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_both"}',
    "--no-enable-chunked-prefill", "--trust-remote-code", "--stream-interval", "20",
    "--namespace", "prod", "--is-prefill-worker", "--migration-limit", "3", "--engine-request-limit", "32",
]


def parse(argv, monkeypatch=None):
    ns = build_parser(use_vllm=False).parse_args(argv)
    return split_namespace(ns)


def test_static_parser_accepts_a_dynamo_manifest_without_vllm():
    config, engine = parse(MANIFEST_ARGS)
    assert engine.model == "Qwen/Qwen3-0.6B" and engine.served_model_name == ["qwen"]
    assert engine.tensor_parallel_size == "2" and engine.enable_prefix_caching is True
    assert engine.enable_chunked_prefill is False and engine.enforce_eager is True
    assert engine.kv_events_config.startswith("{")
    assert (config.namespace, config.mode, config.migration_limit, config.engine_request_limit) == \
        ("prod", "prefill", 3, 32)
    assert config.default_endpoint() == "dyn://prod.prefill.generate"
    assert not hasattr(engine, "namespace")  # Dynamo's settings do not leak into vLLM's namespace


def test_vllms_reasoning_parser_is_the_engines_and_dynamos_is_the_cards(monkeypatch):
    """As in NVIDIA Dynamo: `--dyn-reasoning-parser` / DYN_REASONING_PARSER for the frontend, vLLM's own
    `--reasoning-parser` (any name vLLM knows, e.g. ernie45) for the engine, neither implying the other."""
    config, engine = parse(["--model", "m", "--reasoning-parser", "ernie45"])
    assert engine.reasoning_parser == "ernie45" and config.reasoning_parser is None
    config, engine = parse(["--model", "m", "--dyn-reasoning-parser", "qwen3", "--reasoning-parser", "deepseek_r1"])
    assert (config.reasoning_parser, engine.reasoning_parser) == ("qwen3", "deepseek_r1")
    assert not hasattr(engine, "dyn_reasoning_parser")
    monkeypatch.setenv("DYN_REASONING_PARSER", "qwen3")
    assert parse(["--model", "m"])[0].reasoning_parser == "qwen3"


def test_unknown_flags_are_rejected():
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--not-a-vllm-flag", "1"])


def test_env_twins_and_defaults(monkeypatch):
    monkeypatch.setenv("DYN_NAMESPACE", "envns")
    monkeypatch.setenv("DYN_VLLM_DISAGGREGATION_MODE", "decode")
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "etcd")
    config, _ = parse(["--model", "m"])
    assert (config.namespace, config.mode, config.discovery_backend) == ("envns", "decode", "etcd")
    assert config.default_endpoint() == "dyn://envns.backend.generate"
    config, _ = parse(["--model", "m", "--namespace", "flag", "--disaggregation-mode", "pd"])
    assert (config.namespace, config.mode) == ("flag", "agg")  # flag beats env; pd is agg


def test_conflicting_roles_fail_validation():
    config, _ = parse(["--model", "m", "--is-prefill-worker", "--disaggregation-mode", "decode"])
    with pytest.raises(ValueError):
        config.validate()


def completion(reason, stop=None):
    """Stand-in for vLLM's `CompletionOutput` (only the two fields `finish_reason` reads): these
    tests run without the vLLM venv; tests/vllm/test_serving.py covers the real objects."""
    return SimpleNamespace(finish_reason=reason, stop_reason=stop)


@pytest.mark.parametrize("reason,stop,want", [
    (None, None, None), ("length", None, "length"), ("stop", None, "eos"), ("stop", 5, "eos"),
    ("stop", 77, "stop"), ("stop", "###", "stop"), ("abort", None, "cancelled"), ("error", None, "error"),
])
def test_finish_reasons(reason, stop, want):
    assert finish_reason(completion(reason, stop), {5, 2}) == want


def test_kv_event_endpoints_follow_vllms_bind_rule():
    assert is_bind_endpoint("tcp://*:5557") and not is_bind_endpoint("tcp://10.0.0.1:5557")
    assert subscriber_address("tcp://*:5557") == "tcp://127.0.0.1:5557"
    assert subscriber_address("tcp://192.0.2.2:40000") == "tcp://192.0.2.2:40000"


def test_engine_stats_to_load_metrics():
    stats = EngineStats(total_slots=128)
    stats.total_blocks = 1000
    # Stand-ins for vLLM's `SchedulerStats` / `PrefixCacheStats` (the fields EngineStats reads);
    # the real ones feed it in tests/vllm/test_serving.py (KV blocks and load on /metrics).
    cache = SimpleNamespace(queries=100, hits=25)
    stats.update(SimpleNamespace(num_running_reqs=3, num_waiting_reqs=1, num_skipped_waiting_reqs=2,
                                 kv_cache_usage=0.25, prefix_cache_stats=cache))
    m = stats.load_metrics(worker_id=7)
    assert (m.request_active_slots, m.request_total_slots, m.kv_active_blocks, m.kv_total_blocks,
            m.num_requests_waiting) == (3, 128, 250, 1000, 3)  # deferred requests wait too
    assert m.gpu_prefix_cache_hit_rate == 0.25

"""`python -m dynamo.trtllm` flags (Dynamo owns them; no TensorRT-LLM needed to parse)."""

from __future__ import annotations

import pytest

from dynamo.trtllm.args import DynamoTrtllmArgs, parse_args
from dynamo.worker.role import WorkerRole


def test_dynamo_flag_names_and_legacy_spellings(tmp_path):
    extra = tmp_path / "engine.yaml"
    extra.write_text("kv_cache_config:\n  free_gpu_memory_fraction: 0.5\ncache_transceiver_config:\n  backend: NIXL\n")
    args = parse_args(["--model-path", "/m", "--served-model-name", "tiny", "--tensor-parallel-size", "2",
                       "--publish-events-and-metrics", "--disaggregation-mode", "prefill_and_decode",
                       "--extra-engine-args", str(extra), "--override-engine-args", '{"max_batch_size": 8}'])
    assert args.role is WorkerRole.AGG and args.publish_kv_events
    kwargs = args.engine_kwargs()
    assert kwargs["model"] == "/m" and kwargs["tensor_parallel_size"] == 2 and kwargs["max_batch_size"] == 8
    assert kwargs["kv_cache_config"] == {"free_gpu_memory_fraction": 0.5, "tokens_per_block": 32,
                                         "enable_block_reuse": True, "event_buffer_max_size": 1024}
    assert kwargs["cache_transceiver_config"] == {"backend": "NIXL"} and kwargs["enable_iter_perf_stats"]


def test_env_twins(monkeypatch):
    monkeypatch.setenv("DYN_TRTLLM_DISAGGREGATION_MODE", "decode")
    monkeypatch.setenv("DYN_TRTLLM_KV_BLOCK_SIZE", "64")
    args = parse_args(["--model", "/m"])
    assert args.role is WorkerRole.DECODE and args.kv_block_size == 64


@pytest.mark.parametrize("argv", [["--disaggregation-mode", "encode"], ["--kv-block-size", "0"],
                                  ["--override-engine-args", "[1]"], ["--no-such-flag"]])
def test_bad_flags_fail(argv):
    with pytest.raises(SystemExit):
        parse_args(["--model", "/m", *argv])


def test_defaults_follow_dynamo():
    args = DynamoTrtllmArgs()
    assert (args.kv_block_size, args.max_batch_size, args.max_num_tokens, args.free_gpu_memory_fraction) == \
        (32, 2048, 8192, 0.9)
    assert args.publish_kv_events is False and args.role is WorkerRole.AGG

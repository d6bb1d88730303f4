import json

import pytest

from dynamo.mocker.args import (
    MockerArgs,
    context_length_from_config,
    kv_bytes_per_token_from_config,
)
from dynamo.runtime.config import parse_config


def parse(argv, environ=None):
    return parse_config(MockerArgs, argv, environ=environ or {})


def test_defaults_match_dynamo():
    args = parse(["--model-path", "m"])
    assert args.num_gpu_blocks_override == 16384
    assert args.block_size == 64
    assert args.max_num_seqs == 256
    assert args.max_num_batched_tokens == 8192
    assert args.enable_prefix_caching and args.enable_chunked_prefill
    assert args.watermark == 0.0 and args.speedup_ratio == 1.0
    assert args.mode == "agg" and args.kv_transfer_bandwidth == 64.0
    assert args.namespace == "dynamo" and args.discovery_backend is None  # resolved: etcd if ETCD_ENDPOINTS, else file
    assert args.endpoint is None and args.default_endpoint() == "dyn://dynamo.backend.generate"


def test_flags_and_env_twins():
    args = parse(
        ["--no-enable-prefix-caching", "--speedup-ratio", "0", "--is-prefill-worker"],
        {"DYN_NAMESPACE": "ns", "DYN_BLOCK_SIZE": "16", "DYN_DISCOVERY_BACKEND": "etcd"},
    )
    assert not args.enable_prefix_caching and args.speedup_ratio == 0
    assert args.block_size == 16 and args.namespace == "ns" and args.discovery_backend == "etcd"
    assert args.mode == "prefill" and args.default_endpoint() == "dyn://ns.prefill.generate"
    assert parse(["--disaggregation-mode", "decode"]).mode == "decode"


@pytest.mark.parametrize(
    "field,value",
    [("block_size", 0), ("max_num_seqs", -1), ("watermark", 1.0), ("speedup_ratio", -1), ("kv_bytes_per_token", 0)],
)
def test_validate_rejects(field, value):
    with pytest.raises(ValueError):
        MockerArgs(**{field: value}).validate()


def test_validate_rejects_conflicting_roles():
    with pytest.raises(ValueError):
        MockerArgs(is_prefill_worker=True, is_decode_worker=True).validate()
    with pytest.raises(ValueError):
        MockerArgs(is_prefill_worker=True, disaggregation_mode="decode").validate()
    with pytest.raises(SystemExit):
        parse(["--block-size", "0"])


def test_resolved_from_config_json(tmp_path):
    cfg = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "hidden_size": 4096, "max_position_embeddings": 131072}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    args = MockerArgs(model_path=str(tmp_path)).resolved()
    assert args.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2
    assert args.context_length == 131072
    explicit = MockerArgs(model_path=str(tmp_path), kv_bytes_per_token=10, context_length=99).resolved()
    assert (explicit.kv_bytes_per_token, explicit.context_length) == (10, 99)


def test_config_helpers_handle_nested_and_missing():
    nested = {"text_config": {"num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 8,
                              "max_position_embeddings": 512}}  # fmt: skip
    assert kv_bytes_per_token_from_config(nested) == 2 * 2 * 4 * 8 * 2
    assert context_length_from_config(nested) == 512
    assert kv_bytes_per_token_from_config({}) is None
    fallback = MockerArgs(model_path="/nonexistent").resolved()
    assert fallback.kv_bytes_per_token and fallback.context_length

"""`--trtllm.<dotted.key> VALUE` flags: their typing, their errors, their place among the engine
arguments (`engine_kwargs`, what `LLM(...)` gets), and `dynamo.deploy validate`'s check of them."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from dynamo.deploy.parsers import check_args
from dynamo.deploy.validate import validate_file
from dynamo.trtllm.args import parse_worker_args
from dynamo.trtllm.dynamic_flags import DynamicFlagError, infer_value, split_dynamic_flags
from tests.fixtures.procs import REPO

# The worker's lines of the GLM-5 NVFP4 recipe (recipes/glm-5-nvfp4/trtllm/agg/deploy.yaml).
RECIPE = ["--model-path", "nvidia/GLM-5-NVFP4", "--trtllm.custom_tokenizer", "glm_moe_dsa",
          "--trtllm.tokenizer", "/opt/models/glm5", "--served-model-name", "nvidia/GLM-5-NVFP4",
          "--publish-events-and-metrics"]


@pytest.mark.parametrize("text, value", [
    ("none", None), ("NULL", None), ("42", 42), ("-1", -1), ("0.8", 0.8), ("1e3", 1000.0), ("true", True),
    ("FALSE", False), ("1", 1), ("0", 0), ("yes", "yes"), ("[1, 2]", "[1, 2]"), ('{"a": 1}', '{"a": 1}'),
    ("glm_moe_dsa", "glm_moe_dsa"), ("", "")])
def test_values_are_typed_as_dynamo_types_them(text, value):
    got = infer_value(text)
    assert got == value and type(got) is type(value)  # "1" is the int 1, not True; no YAML/JSON reading


def test_spaced_and_equals_forms_nest_and_leave_the_other_arguments_in_order():
    rest, overrides = split_dynamic_flags([
        "--model", "/m", "--trtllm.custom_tokenizer", "glm_moe_dsa", "--kv-block-size", "64",
        "--trtllm.kv_cache_config.free_gpu_memory_fraction=0.8", "--trtllm.kv_cache_config.dtype", "fp8",
        "--trtllm.speculative_config.max_draft_len", "-1", "--trtllm.My-Key.x=a=b"])
    assert rest == ["--model", "/m", "--kv-block-size", "64"]
    assert overrides == {"custom_tokenizer": "glm_moe_dsa",
                         "kv_cache_config": {"free_gpu_memory_fraction": 0.8, "dtype": "fp8"},
                         "speculative_config": {"max_draft_len": -1}, "My-Key": {"x": "a=b"}}


def test_a_later_flag_for_the_same_key_wins():
    _, overrides = split_dynamic_flags(["--trtllm.a.b", "1", "--trtllm.a.b=2", "--trtllm.c", "none",
                                        "--trtllm.c.d", "3"])
    assert overrides == {"a": {"b": 2}, "c": {"d": 3}}


@pytest.mark.parametrize("argv, message", [
    (["--trtllm.custom_tokenizer"], "--trtllm.custom_tokenizer requires a value"),
    (["--trtllm.a", "--trtllm.b", "1"], "--trtllm.a requires a value"),
    (["--trtllm.", "1"], "--trtllm.: empty key"),
    (["--trtllm..a=1"], "--trtllm..a: empty key"),
    (["--trtllm.a.", "1"], "--trtllm.a.: empty key"),
    (["--trtllm.a", "1", "--trtllm.a.b", "2"], "--trtllm.a.b: 'a' is already set to the value 1"),
])
def test_malformed_flags_are_refused_with_their_name(argv, message):
    with pytest.raises(DynamicFlagError, match=f"^{message}"):
        split_dynamic_flags(argv)


def test_they_override_the_flags_and_the_yaml_at_every_depth(tmp_path):
    extra = tmp_path / "config.yaml"
    extra.write_text(yaml.safe_dump({"max_batch_size": 128, "moe_config": {"backend": "TRTLLM"},
                                     "kv_cache_config": {"dtype": "fp8", "free_gpu_memory_fraction": 0.75},
                                     "speculative_config": {"decoding_type": "MTP", "nested": {"x": 1, "y": 2}}}))
    config, _ = parse_worker_args(RECIPE + [
        "--extra-engine-args", str(extra), "--max-num-tokens", "4096", "--trtllm.max_batch_size", "64",
        "--trtllm.kv_cache_config.free_gpu_memory_fraction", "0.8", "--trtllm.speculative_config.nested.y=3"])
    kwargs = config.engine_kwargs()
    assert kwargs["custom_tokenizer"] == "glm_moe_dsa" and kwargs["tokenizer"] == "/opt/models/glm5"
    assert kwargs["max_batch_size"] == 64 and kwargs["max_num_tokens"] == 4096  # over the YAML; flag kept
    assert kwargs["moe_config"] == {"backend": "TRTLLM"}
    assert kwargs["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8, "dtype": "fp8", "tokens_per_block": 32,
                                         "enable_block_reuse": True, "event_buffer_max_size": 1024}
    assert kwargs["speculative_config"] == {"decoding_type": "MTP", "nested": {"x": 1, "y": 3}}
    # They stand in for --override-engine-args, which is what the config dump shows.
    assert json.loads(config.override_engine_args)["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8}


def test_override_engine_args_merges_at_every_depth_and_each_replacement_is_logged(caplog):
    config, _ = parse_worker_args(["--model", "/m", "--override-engine-args",
                                   '{"kv_cache_config": {"enable_block_reuse": false}, "a": {"b": {"c": 1}}}'])
    with caplog.at_level(logging.WARNING, logger="dynamo.trtllm.dynamic_flags"):
        kwargs = config.engine_kwargs()
    assert kwargs["kv_cache_config"]["enable_block_reuse"] is False and kwargs["a"] == {"b": {"c": 1}}
    assert kwargs["kv_cache_config"]["tokens_per_block"] == 32
    assert "kv_cache_config.enable_block_reuse: True -> False" in caplog.text


@pytest.mark.parametrize("argv, env, message", [
    (["--trtllm.tokenizer"], {}, "--trtllm.tokenizer requires a value"),
    (["--trtllm..x", "1"], {}, "--trtllm..x: empty key"),
    (["--trtllm.x", "1", "--override-engine-args", '{"y": 2}'], {}, "mutually exclusive"),
    (["--trtllm.x", "1"], {"DYN_TRTLLM_OVERRIDE_ENGINE_ARGS": '{"y": 2}'}, "mutually exclusive"),
])
def test_the_worker_exits_2_naming_the_problem(argv, env, message, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        parse_worker_args(["--model", "/m", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_deploy_validate_checks_them_with_the_workers_rules():
    assert check_args("dynamo.trtllm", RECIPE + ["--trtllm.kv_cache_config.dtype=fp8"]).errors == []
    bad = check_args("dynamo.trtllm", RECIPE + ["--trtllm.kv_cache_config.dtype"]).errors
    assert bad == ["dynamo.trtllm: --trtllm.kv_cache_config.dtype requires a value "
                   "(--trtllm.kv_cache_config.dtype VALUE or --trtllm.kv_cache_config.dtype=VALUE)"]
    clash = check_args("dynamo.trtllm", ["--trtllm.a", "1", "--override-engine-args", "{}"]).errors
    assert len(clash) == 1 and "mutually exclusive" in clash[0]


def test_a_manifest_passing_them_validates(tmp_path):
    doc = yaml.safe_load((REPO / "examples/backends/trtllm/deploy/agg.yaml").read_text())
    worker = next(s for s in doc["spec"]["services"].values()
                  if "dynamo.trtllm" in s["extraPodSpec"]["mainContainer"]["command"])
    # the recipe's own env names the model directory its args refer to
    worker["extraPodSpec"]["mainContainer"].setdefault("env", []).append({"name": "MODEL_PATH", "value": "/models/glm"})
    worker["extraPodSpec"]["mainContainer"]["args"] += [
        "--trtllm.custom_tokenizer", "glm_moe_dsa", "--trtllm.tokenizer", "$(MODEL_PATH)",
        "--trtllm.kv_cache_config.free_gpu_memory_fraction=0.8"]
    path = tmp_path / "glm.yaml"
    path.write_text(yaml.safe_dump(doc))
    report = validate_file(path)
    assert report.errors == [] and report.warnings == []

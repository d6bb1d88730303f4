"""What Dynamo 1.6.1's `PlannerConfig` refuses, refused here too (its field constraints and its
`_validate_config`, checked against the real wheel with `/tmp/audit_op/anchor`-style cases), including
in the fields that have no effect here; and what it accepts that this planner used to refuse. One
deliberate difference: a non-positive `itl_ms` is refused like `ttft_ms` (Dynamo checks ttft only)."""

from __future__ import annotations

import json
import re

import pytest

from dynamo.planner.config import convert, load_config
from tests.planner.test_dynamo_config_compat import args

LOAD_BOTH = {"prefill_scale_up_queue_tokens": 10, "prefill_scale_down_queue_tokens": 1,
             "decode_scale_up_kv_rate": 60, "decode_scale_down_kv_rate": 20}


@pytest.mark.parametrize("config, message", [
    ({"ttft_ms": -5}, "ttft_ms must be > 0"),
    ({"ttft": 0}, "ttft_ms must be > 0"),
    ({"itl_ms": -5}, "itl_ms must be > 0"),
    ({"optimization_target": "sla", "enable_load_scaling": False, "enable_throughput_scaling": False},
     "At least one scaling mode must be enabled"),
    ({"max_num_fpm_samples": 0}, "max_num_fpm_samples must be > 0"),
    ({"fpm_sample_bucket_size": 0}, "fpm_sample_bucket_size must be > 0"),
    ({"prophet_window_size": 0}, "prophet_window_size must be > 0"),
    ({"prefill_min_endpoint": 0}, "prefill_min_endpoint must be >= 1"),
    ({"mode": "prefill", "decode_min_endpoint": 2}, "decode_min_endpoint is not supported when mode='prefill'"),
    ({"mode": "decode", "prefill_min_endpoint": 2}, "prefill_min_endpoint is not supported when mode='decode'"),
    ({"mode": "agg", "decode_min_endpoint": 2}, "not supported when mode='agg'"),
    ({"prefill_scale_up_queue_tokens": -1}, "prefill_scale_up_queue_tokens must be >= 0"),
    ({"decode_scale_up_kv_rate": 150}, "decode_scale_up_kv_rate must be within 0..100"),
    ({"speculative_nextn": -1}, "speculative_nextn must be >= 0"),
    ({"load_adjustment_interval_seconds": 2.5}, "whole number of seconds"),
    ({"scheduling": {"scale_interval_seconds": 0}}, "scale_interval_seconds must be > 0"),
    ({"scheduling": {"scale_interval_seconds": 3}}, "must evenly divide"),
    # Dynamo's fields with no effect here: still refused where Dynamo refuses them
    ({"control_api_port": 70000}, "control_api_port must be an integer within 0..65535"),
    ({"total_gpu_power_limit": 0}, "total_gpu_power_limit must be >= 1"),
    ({"enable_power_awareness": True}, "total_gpu_power_limit is required"),
    ({"enable_power_awareness": True, "total_gpu_power_limit": 900, "mode": "agg"}, "not supported with mode='agg'"),
    ({"report_interval_hours": 0}, "report_interval_hours must be a positive finite number"),
    ({"scheduling": {"tick_max_duration_seconds": 0}}, "tick_max_duration_seconds must be > 0"),
    ({"ais_perf_model": {"roles": {"prefill": {}}}}, "ais_perf_model.roles.decode is required"),
    # null where Dynamo's field is not Optional (pydantic: "Input should be a valid string"), named with where
    # the value comes from when the key is left out (the audit's null namespace hid $DYN_NAMESPACE)
    ({"namespace": None}, "`namespace` is null, which Dynamo 1.6.1's PlannerConfig refuses (not an Optional "
                          "field); leave it out for its default ($DYN_NAMESPACE, else dynamo)"),
    ({"metric_pulling_prometheus_endpoint": None}, "leave it out for its default ($PROMETHEUS_ENDPOINT)"),
    ({"enable_load_scaling": None}, "`enable_load_scaling` is null"),
    ({"profile_results_dir": None}, "`profile_results_dir` is null"),
    ({"ttft": None}, "`ttft` is null"),
])
def test_what_dynamo_refuses_is_refused(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(json.dumps(config))


@pytest.mark.parametrize("config", [
    {"throughput_adjustment_interval_seconds": 0},  # the throughput loop is off for target throughput
    {"optimization_target": "load", "mode": "agg", "decode_scale_up_kv_rate": 60, "decode_scale_down_kv_rate": 20},
    {"optimization_target": "load", "mode": "decode", "decode_scale_up_kv_rate": 60, "decode_scale_down_kv_rate": 20},
    {"optimization_target": "load", "mode": "prefill", "prefill_scale_up_queue_tokens": 10,
     "prefill_scale_down_queue_tokens": 1},
    {"optimization_target": "load", **LOAD_BOTH},
    {"load_adjustment_interval_seconds": 2.0, "min_endpoint": 0, "control_api_port": 0},
])
def test_what_dynamo_accepts_is_accepted(config):
    convert(config)


def test_the_default_tick_divides_the_loops_that_run():
    assert convert({"load_adjustment_interval_seconds": 7}).scheduling.scale_interval_seconds == 7
    assert convert({"optimization_target": "sla", "load_adjustment_interval_seconds": 4,
                    "throughput_adjustment_interval_seconds": 6}).scheduling.scale_interval_seconds == 2


def test_left_out_or_null_in_our_own_fields_the_environment_decides():
    env = args(DYN_NAMESPACE="team-a-graph", PROMETHEUS_ENDPOINT="http://prom:9090")
    cfg = load_config(json.dumps({"optimization_target": "sla"}), env)
    assert (cfg.namespace, cfg.prometheus_endpoint) == ("team-a-graph", "http://prom:9090")
    ours = load_config(json.dumps({"prometheus_endpoint": None, "dgd_name": None}), env)  # ours: null = unset
    assert ours.prometheus_endpoint == "http://prom:9090"
    with pytest.raises(ValueError, match="`namespace` is null"):
        load_config(json.dumps({"namespace": None}), env)


@pytest.mark.parametrize("name", ["nope.json", "nope.yaml"])
def test_a_missing_config_file_is_named_not_parsed_as_json(tmp_path, capsys, name):
    # QA item 9: `--config /tmp/nope.json` said "Expecting value: line 1 column 1 (char 0)"
    from dynamo.planner.__main__ import main
    path = tmp_path / name
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --config: no such file: {path}" in err and "Expecting value" not in err
    with pytest.raises(json.JSONDecodeError):  # malformed inline JSON is still reported as such
        load_config('{"ttft_ms": }')

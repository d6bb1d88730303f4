"""The planner config NVIDIA Dynamo 1.6.1 itself writes (`planner_cfg.model_dump_json()` into the ConfigMap
its profiler's DGD mounts) loads here, with the same meaning where the feature exists here; Dynamo's fields
with no effect here are named once at start; typos are refused by name; the validator and the profiler
read planner configs the same way. The fixtures in `data/` were produced by the real 1.6.1 wheel
(`data/generate_dynamo_planner_configs.py`, run in `.venv-anchor`; see `data/README.md`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import msgspec
import pytest
import yaml

from dynamo.deploy import planner_scaling
from dynamo.deploy.model import load as load_graph
from dynamo.deploy.validate import validate_file
from dynamo.planner import dynamo_schema
from dynamo.planner.config import PlannerArgs, PlannerConfig, Scheduling, convert, dumpable, load_config
from dynamo.profiler import dgdr
from dynamo.profiler.pipeline import planner_problems
from dynamo.runtime.config import REDACTED, build_parser, from_namespace
from tests.fixtures.procs import REPO

DATA = Path(__file__).parent / "data"
DEFAULT = DATA / "dynamo_1_6_1_planner_default.json"
PROFILER = DATA / "dynamo_1_6_1_planner_profiler.json"
WHEEL = json.loads((DATA / "dynamo_1_6_1_planner_fields.json").read_text())
NOT_HERE = ["control_api_port", "live_dashboard_port", "report_interval_hours",
            "scheduling.tick_max_duration_seconds"]  # what the default dump turns on that this planner lacks


def args(**env: str) -> PlannerArgs:
    """The planner's flags and environment as its `main` reads them (no flags, only `env`)."""
    return from_namespace(PlannerArgs, build_parser(PlannerArgs).parse_args([]), environ=env)


def no_effect_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "no effect here" in r.getMessage()]


# ----- the schema written down is the wheel's -------------------------------------------------

def test_the_field_names_written_down_are_dynamos():
    assert dynamo_schema.FIELDS == WHEEL["fields"]
    assert dynamo_schema.NULLABLE == set(WHEEL["nullable"])
    assert WHEEL["aliases"].items() <= dynamo_schema.ALIASES.items()


def test_every_dynamo_field_is_implemented_or_declared_without_effect():
    ours = set(PlannerConfig.__struct_fields__)
    top = {name for name in dynamo_schema.FIELDS if name not in ours and name not in dynamo_schema.ALIASES}
    nested = {f"scheduling.{name}" for name in dynamo_schema.FIELDS["scheduling"]
              if name not in Scheduling.__struct_fields__}
    assert top | nested == set(dynamo_schema.NO_EFFECT)


# ----- Dynamo's dumps load -------------------------------------------------------------------

def test_dynamos_default_dump_loads_and_names_what_has_no_effect_once(caplog):
    caplog.set_level(logging.WARNING, "dynamo.planner")
    cfg = load_config(str(DEFAULT), args())
    # nulls are the defaults; the rest means what it means in Dynamo
    assert (cfg.prefill_engine_num_gpu, cfg.decode_engine_num_gpu, cfg.model_name) == (1, 1, None)
    assert (cfg.optimization_target, cfg.enable_load_scaling, cfg.enable_throughput_scaling) == \
        ("throughput", True, False)
    assert (cfg.profile_results_dir, cfg.scheduling.scale_interval_seconds) == ("profiling_results", 5.0)
    assert no_effect_warnings(caplog) == ["planner: Dynamo 1.6.1 config fields accepted, no effect here: "
                                          + ", ".join(NOT_HERE)]


def test_the_dump_dynamos_profiler_writes_loads_with_its_picks(caplog):
    caplog.set_level(logging.WARNING, "dynamo.planner")
    text = PROFILER.read_text()
    cfg = load_config(text, args())  # inline, as a ConfigMap value given to --config
    assert (cfg.prefill_engine_num_gpu, cfg.decode_engine_num_gpu, cfg.model_name) == (2, 4, "Qwen/Qwen3-0.6B")
    assert (cfg.optimization_target, cfg.enable_throughput_scaling, cfg.enable_load_scaling) == ("sla", True, False)
    assert cfg.profile_results_dir == "/workspace/profiling_results"
    # its rapid-mode AIC spec is read (the planner estimates its curves at start when that dir is empty)
    spec = cfg.aic_interpolation
    assert (spec.hf_id, spec.system, spec.backend, spec.sweep_max_context_length) == \
        ("Qwen/Qwen3-0.6B", "h200_sxm", "vllm", 8192)
    assert (spec.prefill_pick.tp, spec.decode_pick.tp, spec.decode_interpolation_granularity) == (2, 4, 6)
    [warning] = no_effect_warnings(caplog)
    assert warning.endswith(", ".join(NOT_HERE))


def test_each_null_dynamo_allows_means_the_default():
    base = msgspec.to_builtins(convert({}))
    for name in sorted(dynamo_schema.NULLABLE):
        assert msgspec.to_builtins(convert({name: None})) == base, name
    with pytest.raises(ValueError, match="environment"):  # not Optional in Dynamo: null stays an error
        convert({"environment": None})


def test_fields_without_effect_are_named_only_when_they_ask_for_something(caplog):
    caplog.set_level(logging.WARNING, "dynamo.planner")
    off = {"control_api_port": 0, "live_dashboard_port": 0, "report_interval_hours": None, "log_dir": None,
           "throughput_metrics_source": "frontend", "enable_power_awareness": False,
           "scheduling": {"external_plugins": [], "gateway": {"enabled": False, "listen": "unix:///x"}}}
    load_config(json.dumps(off), args())
    assert no_effect_warnings(caplog) == []
    on = {"throughput_metrics_source": "router", "enable_power_awareness": True, "total_gpu_power_limit": 9000,
          "scheduling": {"gateway": {"enabled": True}}, "plugin_registration": {"in_process_plugins": [
              {"module": "m", "class": "C", "plugin_id": "p", "plugin_type": "propose", "priority": 1}]}}
    load_config(json.dumps(on), args())
    assert no_effect_warnings(caplog)[0].endswith(
        "throughput_metrics_source, enable_power_awareness, total_gpu_power_limit, scheduling.gateway, "
        "plugin_registration")


# ----- typos are refused by name ----------------------------------------------------------------

@pytest.mark.parametrize("config, name", [
    ({"max_gpu_budgett": 4}, "`max_gpu_budgett`"),
    ({"scheduling": {"tick_max_duraton_seconds": 3}}, "`scheduling.tick_max_duraton_seconds`"),
    ({"scheduling": {"gateway": {"enable": True}}}, "`scheduling.gateway.enable`"),
    ({"scheduling": {"external_plugins": [{"plugin_idd": "x"}]}}, r"`scheduling.external_plugins\[0\].plugin_idd`"),
    ({"plugin_registration": {"transport": {"timeout": 1}}}, "`plugin_registration.transport.timeout`"),
    ({"aic_perf_model": {}}, "aic_perf_model is no longer supported"),  # Dynamo's own refusal
])
def test_a_key_in_neither_schema_is_refused_by_name(config, name):
    dump = json.loads(DEFAULT.read_text())
    for key, value in config.items():  # a typo inside Dynamo's full dump, nested ones merged into it
        dump[key] = {**dump[key], **value} if isinstance(value, dict) and key in dump else value
    with pytest.raises(ValueError, match=name):
        load_config(json.dumps(dump), args())


# ----- aliases and Prometheus settings -----------------------------------------------------------

def test_dynamos_aliases_fold_into_their_field_and_the_field_wins():
    cfg = convert({"ttft": 200, "ttft_ms": 300, "itl": 20, "throughput_adjustment_interval": 60,
                   "load_adjustment_interval": 3, "optimization_target": "sla"})
    assert (cfg.ttft_ms, cfg.itl_ms, cfg.throughput_adjustment_interval_seconds,
            cfg.load_adjustment_interval_seconds) == (300, 20, 60, 3)
    # Dynamo's name for the endpoint wins over the environment's default, as the config always does
    env = args(PROMETHEUS_ENDPOINT="http://env:9090")
    assert load_config('{"metric_pulling_prometheus_endpoint": "http://cfg:9090"}', env).prometheus_endpoint == \
        "http://cfg:9090"
    assert load_config("{}", env).prometheus_endpoint == "http://env:9090"


def test_prometheus_settings_come_from_dynamos_environment_variables_unless_the_config_sets_them(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    env = args(PROMETHEUS_TOKEN="t0k", PROMETHEUS_TOKEN_FILE="/var/run/token", PROMETHEUS_SSL_VERIFY="yes",
               PROMETHEUS_CA_BUNDLE=str(bundle), PROMETHEUS_EXTRA_QUERY_PARAMS="namespace=my-ns&tenant=foo",
               DYN_PLANNER_PROMETHEUS_REQUEST_TIMEOUT_SECONDS="2.5")
    cfg = load_config("{}", env)
    assert (cfg.metric_pulling_prometheus_token, cfg.metric_pulling_prometheus_token_file) == ("t0k", "/var/run/token")
    assert (cfg.metric_pulling_prometheus_ssl_verify, cfg.metric_pulling_prometheus_ca_bundle) == (True, str(bundle))
    assert cfg.metric_pulling_prometheus_extra_query_params == {"namespace": "my-ns", "tenant": "foo"}
    assert cfg.metric_pulling_prometheus_request_timeout_seconds == 2.5
    given = load_config(json.dumps({"metric_pulling_prometheus_token": "cfg", "metric_pulling_prometheus_ssl_verify":
                                    False, "metric_pulling_prometheus_extra_query_params": {"a": "1"}}), env)
    assert (given.metric_pulling_prometheus_token, given.metric_pulling_prometheus_ssl_verify,
            given.metric_pulling_prometheus_extra_query_params) == ("cfg", False, {"a": "1"})
    plain = load_config("{}", args(PROMETHEUS_SSL_VERIFY="on"))  # Dynamo's reading: only 1/true/yes
    assert plain.metric_pulling_prometheus_ssl_verify is False
    assert load_config("{}", args()).metric_pulling_prometheus_request_timeout_seconds == 10.0


@pytest.mark.parametrize("config, env, match", [
    ({}, {"PROMETHEUS_EXTRA_QUERY_PARAMS": "novalue"}, "bad query field"),
    ({"metric_pulling_prometheus_ca_bundle": "/nonexistent/ca.pem"}, {}, "ca_bundle path does not exist"),
    ({}, {"PROMETHEUS_CA_BUNDLE": "/nonexistent/ca.pem"}, "ca_bundle path does not exist"),
    ({"metric_pulling_prometheus_request_timeout_seconds": 0}, {}, "must be > 0"),
])
def test_prometheus_settings_dynamo_refuses_are_refused(config, env, match):
    with pytest.raises(ValueError, match=match):
        load_config(json.dumps(config), args(**env))


def test_the_dumped_effective_config_hides_the_token():
    cfg = convert({"metric_pulling_prometheus_token": "s3cret"})
    assert dumpable(cfg)["metric_pulling_prometheus_token"] == REDACTED
    assert dumpable(convert({}))["metric_pulling_prometheus_token"] is None


# ----- dynamo.deploy and the profiler read configs the same way ------------------------------------

PLANNER_EXAMPLE = REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"


def planner_doc(config: dict) -> dict:
    doc = yaml.safe_load(PLANNER_EXAMPLE.read_text())
    planner_args = doc["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["args"]
    planner_args[planner_args.index("--config") + 1] = json.dumps(config)
    return doc


def test_the_validator_takes_dynamos_dump_and_still_refuses_a_typo(tmp_path):
    dump = {**json.loads(PROFILER.read_text()), "backend": "mocker"}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(planner_doc(dump)))
    assert validate_file(path).errors == []
    path.write_text(yaml.safe_dump(planner_doc({**dump, "live_dashbord_port": 0})))
    assert any("refuses this config" in e and "`live_dashbord_port`" in e for e in validate_file(path).errors)


def test_the_pools_a_planner_scales_are_read_from_dynamos_dump():
    # mode `prefill` in Dynamo's full dump: the planner scales the prefill pool only (read, not guessed)
    dump = {**json.loads(DEFAULT.read_text()), "backend": "mocker", "mode": "prefill", "min_endpoint": 0}
    graph = load_graph(planner_doc(dump))
    assert planner_scaling.scaled_services(graph) == {"MockerPrefillWorker": "Planner"}
    assert planner_scaling.zero_capable(graph) == {"MockerPrefillWorker": "Planner"}


def test_the_profiler_admits_a_request_whose_planner_uses_dynamos_names():
    spec = {"model": "Qwen/Qwen3-32B", "backend": "vllm"}
    ok = dgdr.parse({"metadata": {"name": "r"}, "spec": {**spec, "features": {"planner": {
        "optimization_target": "sla", "metric_pulling_prometheus_endpoint": "http://prom:9090", "log_dir": None,
        "decode_engine_num_gpu": None, "control_api_port": 0, "throughput_adjustment_interval": 60}}}})
    assert planner_problems(ok) == []
    typo = dgdr.parse({"metadata": {"name": "r"}, "spec": {**spec, "features": {"planner": {"contrl_api_port": 0}}}})
    assert any("`contrl_api_port`" in p for p in planner_problems(typo))

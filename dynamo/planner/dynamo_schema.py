"""NVIDIA Dynamo 1.6.1's `PlannerConfig` as names, and the translation of a config written in it
into ours. Dynamo's profiler writes `planner_cfg.model_dump_json()` (every field, nested sections
included, nulls kept) into the ConfigMap the generated DGD's planner reads with `--config`; this
module owns the boundary between that schema and `dynamo.planner.config.PlannerConfig`:

- a key in neither schema (a typo) is refused by name;
- Dynamo's aliases fold into their field (the field itself wins when both are given, as in Dynamo);
- null in a field Dynamo declares Optional means "the default"; null in any other of its fields is refused,
  as Dynamo's pydantic refuses it (`"namespace": null` would otherwise hide `$DYN_NAMESPACE`);
- Dynamo's fields this planner does not implement are accepted and dropped; those set to something
  (not null / false / 0 / empty) are named, for one warning at start.

Written down from Dynamo's source (`dynamo/planner/config/planner_config.py`, and
`plugins/registry/config.py`, `plugins/transport/config.py` for the nested sections), never imported:
Dynamo's package is not a dependency. `tests/planner/data/dynamo_1_6_1_planner_fields.json`, produced
by the real wheel, is what the tests hold these names to.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any


def _names(text: str) -> dict[str, None]:
    return dict.fromkeys(text.split())


# A leaf is None; a section that refuses unknown keys in Dynamo (`extra="forbid"`) is a dict of its
# fields; a list of such entries is a one-element list. Sections Dynamo reads with `extra="ignore"`
# (`aic_interpolation`) are leaves: anything passes there.
_EXTERNAL_PLUGIN = _names("plugin_id plugin_type priority endpoint auth_token protocol_version version "
                          "execution_interval_seconds hold_policy needs requires_produced_fields "
                          "observation_window_seconds")
_IN_PROCESS_PLUGIN = _names("module class plugin_id plugin_type priority execution_interval_seconds hold_policy "
                            "needs requires_produced_fields observation_window_seconds kwargs")
FIELDS: dict[str, Any] = {
    **_names(
        "pre_deployment_sweeping_mode environment namespace backend mode optimization_target log_dir "
        "throughput_adjustment_interval_seconds max_throughput_scaling_replicas max_gpu_budget min_gpu_budget "
        "min_endpoint prefill_min_endpoint decode_min_endpoint control_api_port decode_engine_num_gpu "
        "prefill_engine_num_gpu profile_results_dir aic_interpolation ttft_ms itl_ms load_predictor "
        "load_predictor_log1p prophet_window_size load_predictor_warmup_trace kalman_q_level kalman_q_trend "
        "kalman_r kalman_min_points metric_pulling_prometheus_endpoint metric_pulling_prometheus_token "
        "metric_pulling_prometheus_token_file metric_pulling_prometheus_ssl_verify "
        "metric_pulling_prometheus_extra_query_params metric_pulling_prometheus_ca_bundle "
        "metric_pulling_prometheus_request_timeout_seconds metric_reporting_prometheus_port "
        "throughput_metrics_source model_name global_planner_namespace enable_throughput_scaling "
        "enable_load_scaling load_adjustment_interval_seconds max_num_fpm_samples fpm_sample_bucket_size "
        "load_scaling_down_sensitivity prefill_scale_up_queue_tokens prefill_scale_down_queue_tokens "
        "decode_scale_up_kv_rate decode_scale_down_kv_rate load_min_observations speculative_nextn advisory "
        "enable_power_awareness total_gpu_power_limit report_interval_hours report_output_dir report_filename "
        "report_write_gzip_log live_dashboard_port"),
    "ais_perf_model": {"roles": None},
    "scheduling": {"tick_max_duration_seconds": None, "external_plugins": [_EXTERNAL_PLUGIN],
                   "gateway": _names("enabled listen allow_insecure"), "scale_interval_seconds": None},
    "plugin_registration": {
        "auth": _names("trusted_sources static_secrets"),
        "transport": _names("allow_insecure_grpc request_timeout_seconds keepalive_time_ms max_message_size_bytes"),
        **_names("protocol_version_min protocol_version_max heartbeat_timeout_seconds heartbeat_missed_threshold"),
        "in_process_plugins": [_IN_PROCESS_PLUGIN],
        "admin": {"mode": None},
    },
}

# Fields whose Dynamo type is Optional: null there is "the default" here.
NULLABLE = frozenset((
    "aic_interpolation ais_perf_model decode_engine_num_gpu decode_min_endpoint decode_scale_down_kv_rate "
    "decode_scale_up_kv_rate global_planner_namespace load_predictor_warmup_trace log_dir "
    "metric_pulling_prometheus_ca_bundle metric_pulling_prometheus_extra_query_params "
    "metric_pulling_prometheus_token metric_pulling_prometheus_token_file model_name pre_deployment_sweeping_mode "
    "prefill_engine_num_gpu prefill_min_endpoint prefill_scale_down_queue_tokens prefill_scale_up_queue_tokens "
    "report_filename report_interval_hours total_gpu_power_limit").split())

# Where a field Dynamo requires takes its value from when the key is left out (said when null is refused).
FROM_ENV = {"namespace": "$DYN_NAMESPACE, else dynamo", "metric_pulling_prometheus_endpoint": "$PROMETHEUS_ENDPOINT",
            "metric_reporting_prometheus_port": "$PLANNER_PROMETHEUS_PORT"}

# Dynamo's validation aliases, and its name for our `prometheus_endpoint`.
ALIASES = {"ttft": "ttft_ms", "itl": "itl_ms",
           "throughput_adjustment_interval": "throughput_adjustment_interval_seconds",
           "load_adjustment_interval": "load_adjustment_interval_seconds",
           "metric_pulling_prometheus_endpoint": "prometheus_endpoint"}

# Refused by Dynamo itself with this message (a before-validator), so refused here the same way.
RETIRED = {"aic_perf_model": "aic_perf_model is no longer supported; use ais_perf_model.roles with canonical "
                             "AISimulate configurations"}


def _set(value: Any) -> bool:
    """The value asks for something (null, false, 0 and empty are Dynamo's "off")."""
    return value not in (None, False, 0, "", [], {})


def _never(value: Any) -> bool:
    return False


# Dynamo's fields with no effect here -> whether a value asks for what is missing (then it is named).
NO_EFFECT: dict[str, Callable[[Any], bool]] = {
    "log_dir": _set,
    "control_api_port": _set,  # Dynamo's localhost runtime/GPU-budget API (0: off)
    "live_dashboard_port": _set,  # its live diagnostics dashboard (0: off)
    "report_interval_hours": _set,  # its HTML diagnostics reports (null: off) ...
    "report_output_dir": _never,  # ... which these three only shape
    "report_filename": _never,
    "report_write_gzip_log": _never,
    "ais_perf_model": _set,  # AISimulate estimators
    "load_predictor_warmup_trace": _set,
    "throughput_metrics_source": lambda v: v != "frontend",  # the frontend's metrics are what is read here
    "enable_power_awareness": _set,
    "total_gpu_power_limit": _set,
    "scheduling.tick_max_duration_seconds": _set,  # the deadline of its plugin pipeline's tick
    "scheduling.external_plugins": _set,
    "scheduling.gateway": lambda v: isinstance(v, dict) and bool(v.get("enabled")),
    # how plugins come to exist: asks for something only with in-process plugins (external ones and the
    # gateway are named above)
    "plugin_registration": lambda v: isinstance(v, dict) and bool(v.get("in_process_plugins")),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _power_problem(raw: dict[str, Any]) -> str | None:
    if not raw.get("enable_power_awareness"):
        return None
    if raw.get("total_gpu_power_limit") is None:
        return "total_gpu_power_limit is required when enable_power_awareness=True"
    if raw.get("environment", "kubernetes") != "kubernetes":
        return "enable_power_awareness=True requires environment='kubernetes'"
    if raw.get("mode", "disagg") == "agg":
        return "enable_power_awareness=True is not supported with mode='agg'"
    return None


def _ais_problem(raw: dict[str, Any]) -> str | None:
    spec = raw.get("ais_perf_model")
    if not isinstance(spec, dict):
        return None
    mode = raw.get("mode", "disagg")
    needed = {"disagg": ("prefill", "decode"), "prefill": ("prefill",), "decode": ("decode",),
              "agg": ("aggregated",)}.get(mode, ())
    missing = [r for r in needed if r not in (spec.get("roles") or {})]
    return f"ais_perf_model.roles.{missing[0]} is required for mode={mode!r}" if missing else None


def no_effect_problems(raw: dict[str, Any]) -> list[str]:
    """What Dynamo 1.6.1 refuses in the fields that have no effect here (they are dropped, but a config
    Dynamo's planner would not start with is not one to accept either)."""
    problems = []
    port = raw.get("control_api_port", 0)
    if not (_number(port) and float(port).is_integer() and 0 <= port <= 65535):
        problems.append(f"control_api_port must be an integer within 0..65535, got {port!r}")
    limit = raw.get("total_gpu_power_limit")
    if limit is not None and not (_number(limit) and limit >= 1):
        problems.append(f"total_gpu_power_limit must be >= 1, got {limit!r}")
    hours = raw.get("report_interval_hours")
    if hours is not None and not (_number(hours) and 0 < hours < float("inf")):
        problems.append("report_interval_hours must be a positive finite number or None")
    tick = (raw.get("scheduling") or {}).get("tick_max_duration_seconds") if isinstance(raw.get("scheduling"),
                                                                                         dict) else None
    if tick is not None and not (_number(tick) and tick > 0):
        problems.append("scheduling.tick_max_duration_seconds must be > 0")
    return problems + [p for p in (_power_problem(raw), _ais_problem(raw)) if p]


def unknown_keys(raw: dict[str, Any], ours: Collection[str]) -> list[str]:
    """Keys in neither Dynamo's schema nor ours (nested sections as dotted paths, list entries as `[i]`)."""
    found = [k for k in raw if k not in FIELDS and k not in ALIASES and k not in ours]
    for key, schema in FIELDS.items():
        if schema is not None and key in raw:
            found += _unknown_in(raw[key], schema, key)
    return found


def _unknown_in(value: Any, schema: Any, path: str) -> list[str]:
    if isinstance(schema, list) and isinstance(value, list):
        return [k for i, item in enumerate(value) for k in _unknown_in(item, schema[0], f"{path}[{i}]")]
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return []  # a wrong type is the type check's to report
    found = [f"{path}.{k}" for k in value if k not in schema]
    for key, sub in schema.items():
        if sub is not None and key in value:
            found += _unknown_in(value[key], sub, f"{path}.{key}")
    return found


def null_problems(raw: dict[str, Any]) -> list[str]:
    """Dynamo's fields (and aliases) given null where Dynamo's type has no None: its pydantic refuses them."""
    return [f"`{key}` is null, which Dynamo 1.6.1's PlannerConfig refuses (not an Optional field); leave it out "
            f"for its default ({FROM_ENV.get(ALIASES.get(key, key), FROM_ENV.get(key, 'the default'))})"
            for key, value in raw.items() if value is None and (key in FIELDS or key in ALIASES) and key not in NULLABLE]


def to_ours(raw: dict[str, Any], ours: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """`raw` (Dynamo's keys, ours, or both) as our keys, and the names of Dynamo's fields that asked for
    something this planner does not do. Raises ValueError naming any key in neither schema."""
    for key, why in RETIRED.items():
        if key in raw:
            raise ValueError(why)
    unknown = unknown_keys(raw, ours)
    if unknown:
        raise ValueError(", ".join(f"unknown field `{k}`" for k in unknown)
                         + " (in neither Dynamo 1.6.1's PlannerConfig nor this planner's)")
    problems = null_problems(raw) + no_effect_problems(raw)
    if problems:
        raise ValueError("; ".join(problems))
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key)
        if (name != key and name in raw) or (value is None and key in NULLABLE):
            continue
        out[name] = dict(value) if isinstance(value, dict) else value  # copied: no-effect keys are popped below
    ignored = []
    for dotted, asks in NO_EFFECT.items():
        section, _, leaf = dotted.rpartition(".")
        holder = out.get(section) if section else out
        if isinstance(holder, dict) and leaf in holder and asks(holder.pop(leaf)):
            ignored.append(dotted)
    return out, ignored

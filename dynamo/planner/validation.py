"""What the planner refuses at start: NVIDIA Dynamo 1.6.1's `PlannerConfig` refusals (its field
constraints and `_validate_config`), then ours. A config Dynamo's planner would not start with is not
one to start with here either (`dynamo.deploy validate` and the profiler's admission read through this
too); Dynamo's fields that have no effect here are checked in `dynamo_schema.no_effect_problems`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynamo.planner.config import PlannerConfig


def _divides(tick: float, interval: float) -> bool:
    """`interval` is a whole number of `tick`s (to the millisecond: both are seconds); a tick under a
    millisecond divides nothing (a ValueError for its caller, not a ZeroDivisionError)."""
    ms = round(tick * 1000)
    return ms > 0 and round(interval * 1000) % ms == 0


def validate(cfg: PlannerConfig) -> None:
    """Dynamo 1.6.1's refusals (its field constraints and `_validate_config`), then ours."""
    _ranges(cfg)
    _intervals(cfg)
    _roles(cfg)
    if cfg.optimization_target == "load":
        _load_thresholds(cfg)
    if not (cfg.enable_load_scaling or cfg.enable_throughput_scaling):
        raise ValueError("At least one scaling mode must be enabled (enable_throughput_scaling or "
                         "enable_load_scaling)")
    if cfg.environment == "global-planner" and not cfg.global_planner_namespace:
        raise ValueError("environment 'global-planner' needs global_planner_namespace (where the GlobalPlanner "
                         "serves)")
    # ours
    if cfg.max_gpu_budget >= 0 and 0 <= cfg.max_gpu_budget < cfg.min_gpu_budget:
        raise ValueError("min_gpu_budget exceeds max_gpu_budget")
    if cfg.environment == "virtual" and not cfg.model_name:
        raise ValueError("model_name is required for environment 'virtual'")
    if cfg.load_scaling_step < 1:
        raise ValueError("load_scaling_step must be >= 1")


def _ranges(cfg: PlannerConfig) -> None:
    # An SLA of 0 or less cannot be met: every estimate would scale up to the budget. Dynamo checks
    # ttft_ms only; a non-positive itl_ms is the same mistake and is refused here too.
    for name in ("ttft_ms", "itl_ms"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    for name in ("max_num_fpm_samples", "fpm_sample_bucket_size", "prophet_window_size",
                 "max_throughput_scaling_replicas", "metric_pulling_prometheus_request_timeout_seconds"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
    root = math.isqrt(cfg.fpm_sample_bucket_size)
    if root * root != cfg.fpm_sample_bucket_size:
        raise ValueError(f"fpm_sample_bucket_size must be a perfect square, got {cfg.fpm_sample_bucket_size}")
    if not 0 <= cfg.load_scaling_down_sensitivity <= 100:
        raise ValueError("load_scaling_down_sensitivity must be within 0..100")
    if cfg.min_endpoint < 0 or cfg.speculative_nextn < 0:
        raise ValueError("min_endpoint and speculative_nextn must be >= 0")
    for name in ("prefill_min_endpoint", "decode_min_endpoint"):  # min_endpoint 0 is scale-to-zero
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1 when set (min_endpoint: 0 permits scale-to-zero)")
    for name in ("prefill_scale_up_queue_tokens", "prefill_scale_down_queue_tokens"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0")
    for name in ("decode_scale_up_kv_rate", "decode_scale_down_kv_rate"):
        if getattr(cfg, name) is not None and not 0 <= getattr(cfg, name) <= 100:
            raise ValueError(f"{name} must be within 0..100")


def _intervals(cfg: PlannerConfig) -> None:
    load, thpt = cfg.load_adjustment_interval_seconds, cfg.throughput_adjustment_interval_seconds
    for name, value in (("load_adjustment_interval_seconds", load),
                        ("throughput_adjustment_interval_seconds", thpt)):
        if not float(value).is_integer():  # Dynamo's fields are int
            raise ValueError(f"{name} must be a whole number of seconds, got {value}")
    if load <= 0:
        raise ValueError("load_adjustment_interval_seconds must be > 0")
    if cfg.enable_throughput_scaling and thpt <= 0:  # unused otherwise (Dynamo checks it only then)
        raise ValueError("throughput_adjustment_interval_seconds must be > 0 when throughput scaling is enabled")
    tick = cfg.scheduling.scale_interval_seconds
    if tick is None or not tick > 0:
        raise ValueError("scheduling.scale_interval_seconds must be > 0")
    if any(not _divides(tick, v) for v in ([load, thpt] if cfg.enable_throughput_scaling else [load])):
        raise ValueError("scheduling.scale_interval_seconds must evenly divide load_adjustment_interval_seconds "
                         "and, when throughput scaling is enabled, throughput_adjustment_interval_seconds")
    if cfg.enable_load_scaling and cfg.enable_throughput_scaling and load >= thpt:
        raise ValueError("load_adjustment_interval_seconds must be shorter than "
                         "throughput_adjustment_interval_seconds when both loops run")


def _roles(cfg: PlannerConfig) -> None:
    """Role minimums only where the mode has that role (Dynamo refuses the others)."""
    if cfg.mode == "prefill" and cfg.decode_min_endpoint is not None:
        raise ValueError("decode_min_endpoint is not supported when mode='prefill'")
    if cfg.mode == "decode" and cfg.prefill_min_endpoint is not None:
        raise ValueError("prefill_min_endpoint is not supported when mode='decode'")
    if cfg.mode == "agg" and (cfg.prefill_min_endpoint is not None or cfg.decode_min_endpoint is not None):
        raise ValueError("prefill_min_endpoint and decode_min_endpoint are not supported when mode='agg'; use "
                         "min_endpoint")


def _load_thresholds(cfg: PlannerConfig) -> None:
    """Target `load`: the thresholds of the pools the mode scales (Dynamo: prefill ones for disagg and
    prefill, decode ones for disagg, decode and agg), each up above its down."""
    if cfg.mode in ("disagg", "prefill"):
        _up_above_down(cfg.prefill_scale_up_queue_tokens, cfg.prefill_scale_down_queue_tokens,
                       "prefill_scale_{up,down}_queue_tokens", "prefill")
    if cfg.mode in ("disagg", "decode", "agg"):
        _up_above_down(cfg.decode_scale_up_kv_rate, cfg.decode_scale_down_kv_rate,
                       "decode_scale_{up,down}_kv_rate", "decode")


def _up_above_down(up: float | None, down: float | None, names: str, pool: str) -> None:
    if up is None or down is None:
        raise ValueError(f"optimization_target 'load' needs {names} for {pool} scaling")
    if not up > down:
        raise ValueError(f"{names}: up > down needed")

"""The planner's configuration: NVIDIA Dynamo 1.6.1's `PlannerConfig` (same field names,
defaults and validation rules), plus the few fields this implementation adds for the
local connector and for its guards (marked "ours"). A config in Dynamo's own form (the dump its
profiler writes: every field, nulls, nested sections) goes through `dynamo_schema.to_ours` first.

`python -m dynamo.planner --config FILE|JSON`: the only flag 1.6.1 has (ours adds the
`--dump-config-to` every component takes); the environment twins Dynamo reads (`DYN_NAMESPACE`,
`PROMETHEUS_ENDPOINT`, `PROMETHEUS_TOKEN[_FILE]`, `PROMETHEUS_SSL_VERIFY`, `PROMETHEUS_CA_BUNDLE`,
`PROMETHEUS_EXTRA_QUERY_PARAMS`, `DYN_PLANNER_PROMETHEUS_REQUEST_TIMEOUT_SECONDS`,
`PLANNER_PROMETHEUS_PORT`) come through `PlannerArgs`, with one of ours: `DYN_PLANNER_PROFILE_RESULTS_DIR`,
the profile data as this process sees it (how a profiler DGD's mount reaches a planner under `run`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec
import yaml

from dynamo.planner import dynamo_schema, validation
from dynamo.runtime.config import REDACTED, setting
from dynamo.runtime.config_dump import DumpConfigTo

log = logging.getLogger("dynamo.planner")

DEFAULT_PROMETHEUS = "http://prometheus-kube-prometheus-prometheus.monitoring.svc.cluster.local:9090"
TARGETS = ("throughput", "latency", "load", "sla")


@dataclass
class PlannerArgs(DumpConfigTo):
    """SLA planner: scales prefill/decode workers from forward-pass metrics and Prometheus."""

    config: str | None = setting(None, "PlannerConfig as inline JSON or a .json/.yaml path",
                                 env="DYN_PLANNER_CONFIG")
    namespace: str | None = setting(None, "Dynamo namespace (when the config does not set one)",
                                    env="DYN_NAMESPACE")
    prometheus_endpoint: str = setting(DEFAULT_PROMETHEUS, "Prometheus base URL", env="PROMETHEUS_ENDPOINT")
    prometheus_port: int = setting(0, "Serve dynamo_planner_* metrics on this port (0: off)",
                                   env="PLANNER_PROMETHEUS_PORT")
    dgd_name: str | None = setting(None, "Kubernetes: the DGD to scale (the operator injects it)",
                                   env="DYN_PARENT_DGD_K8S_NAME")
    kube_namespace: str | None = setting(None, "Kubernetes namespace of the DGD", env="POD_NAMESPACE")
    kubeconfig: str | None = setting(None, "Kubeconfig file when not in a cluster", env="KUBECONFIG")
    kube_deployment_selector: str | None = setting(
        None, "Kubernetes without the operator: scale the Deployments this label selector finds (render sets it)",
        env="DYN_PLANNER_DEPLOYMENT_SELECTOR")
    control_url: str | None = setting(None, "`dynamo.deploy run` control endpoint (`run` injects it); set: the "
                                      "graph runs locally and the local connector scales it",
                                      env="DYN_DEPLOY_CONTROL_URL")
    # Dynamo's Prometheus defaults: environment only (Dynamo has no flags for them); the config's
    # metric_pulling_prometheus_* fields win. Kept as text where Dynamo parses the text its own way.
    prometheus_token: str | None = setting(None, "Bearer token for Prometheus", env="PROMETHEUS_TOKEN",
                                           flag=False, secret=True)
    prometheus_token_file: str | None = setting(None, "File holding the bearer token, re-read at each query",
                                                env="PROMETHEUS_TOKEN_FILE", flag=False)
    prometheus_ssl_verify: str | None = setting(None, "Verify Prometheus' TLS certificate (1/true/yes; "
                                                "default false, as Dynamo)", env="PROMETHEUS_SSL_VERIFY", flag=False)
    prometheus_ca_bundle: str | None = setting(None, "CA bundle to verify Prometheus against (turns verification "
                                               "on)", env="PROMETHEUS_CA_BUNDLE", flag=False)
    prometheus_extra_query_params: str | None = setting(
        None, "Query parameters added to every Prometheus query, as a URL query string (a=1&b=2)",
        env="PROMETHEUS_EXTRA_QUERY_PARAMS", flag=False)
    prometheus_request_timeout_seconds: float | None = setting(
        None, "Connect and read-inactivity timeout of each Prometheus request (default 10)",
        env="DYN_PLANNER_PROMETHEUS_REQUEST_TIMEOUT_SECONDS", flag=False)
    # Ours: where this process sees the profile data. The profiler's DGD sets it to the ConfigMap's mount
    # beside the config's `profile_results_dir`; `dynamo.deploy run` maps env paths to its local copies
    # of the mounts (never a path inside the `--config` JSON), so under `run` this one is the readable one.
    profile_results_dir: str | None = setting(
        None, "Profile data directory as this process sees it (fills profile_results_dir; under `dynamo.deploy "
        "run`, where it is the mapped mount, replaces it)", env="DYN_PLANNER_PROFILE_RESULTS_DIR", flag=False)


class Scheduling(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    scale_interval_seconds: float | None = None


Positive = Annotated[int, msgspec.Meta(gt=0)]


class ParallelPick(msgspec.Struct, kw_only=True, frozen=True):
    """Dynamo's `PickedParallelConfig`: one engine's parallelism as AIConfigurator picked it."""

    tp: int = 1
    pp: int = 1
    dp: int = 1  # attention data parallelism
    moe_tp: int = 1
    moe_ep: int = 1


class AicInterpolation(msgspec.Struct, kw_only=True):
    """Dynamo's `AICInterpolationSpec`, what its rapid profiler hands the planner instead of profile files:
    the curves are AIConfigurator's estimates for these picks, built at start (`aic_interpolation.py`).
    Unknown keys pass, as in Dynamo."""

    hf_id: str
    system: str  # AIConfigurator's GPU system, e.g. h200_sxm
    backend: Literal["trtllm", "vllm", "sglang"]
    isl: Positive
    osl: Positive
    sweep_max_context_length: Positive
    prefill_interpolation_granularity: Positive
    decode_interpolation_granularity: Positive
    prefill_pick: ParallelPick
    decode_pick: ParallelPick


class PlannerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # identity and mode
    environment: Literal["kubernetes", "virtual", "global-planner", "local"] = "kubernetes"
    namespace: str | None = None
    backend: Literal["vllm", "sglang", "trtllm", "mocker"] = "vllm"
    mode: Literal["disagg", "prefill", "decode", "agg"] = "disagg"
    optimization_target: Literal["throughput", "latency", "load", "sla"] = "throughput"
    pre_deployment_sweeping_mode: Literal["rapid", "none", "thorough"] = "rapid"
    model_name: str | None = None
    # intervals
    throughput_adjustment_interval_seconds: float = 180
    load_adjustment_interval_seconds: float = 5
    max_throughput_scaling_replicas: int = 8
    scheduling: Scheduling = msgspec.field(default_factory=Scheduling)
    enable_load_scaling: bool | None = None
    enable_throughput_scaling: bool | None = None
    # budgets
    max_gpu_budget: int = 8
    min_gpu_budget: int = -1
    min_endpoint: int = 1
    prefill_min_endpoint: int | None = None
    decode_min_endpoint: int | None = None
    max_endpoint: int = -1  # ours: -1 = no per-pool cap beyond the GPU budget
    prefill_max_endpoint: int | None = None
    decode_max_endpoint: int | None = None
    prefill_engine_num_gpu: int = 1
    decode_engine_num_gpu: int = 1
    load_scaling_step: int = 1  # ours: replicas per load tick (Dynamo: 1)
    # SLA
    ttft_ms: float = 500.0
    itl_ms: float = 50.0
    ttft: float | None = None  # aliases
    itl: float | None = None
    # predictor
    load_predictor: Literal["arima", "constant", "prophet", "kalman"] = "arima"
    load_predictor_log1p: bool = False
    prophet_window_size: int = 50
    kalman_q_level: float = 1.0
    kalman_q_trend: float = 0.1
    kalman_r: float = 10.0
    kalman_min_points: int = 5
    # prometheus (Dynamo: metric_pulling_prometheus_endpoint, an alias; the others keep Dynamo's names)
    prometheus_endpoint: str | None = None
    metric_pulling_prometheus_token: str | None = None
    metric_pulling_prometheus_token_file: str | None = None  # re-read before each query (rotated tokens)
    metric_pulling_prometheus_ssl_verify: bool = False  # Dynamo's default
    metric_pulling_prometheus_ca_bundle: str | None = None  # set: verify against it, whatever ssl_verify says
    metric_pulling_prometheus_extra_query_params: dict[str, str] | None = None
    metric_pulling_prometheus_request_timeout_seconds: float = 10.0
    # load loop
    max_num_fpm_samples: int = 64
    fpm_sample_bucket_size: int = 16
    load_scaling_down_sensitivity: float = 80
    load_min_observations: int = 5
    prefill_scale_up_queue_tokens: float | None = None
    prefill_scale_down_queue_tokens: float | None = None
    decode_scale_up_kv_rate: float | None = None
    decode_scale_down_kv_rate: float | None = None
    # other
    speculative_nextn: int = 0
    advisory: bool = False
    metric_reporting_prometheus_port: int | None = None
    profile_results_dir: str | None = None
    aic_interpolation: AicInterpolation | None = None  # used when profile_results_dir holds no data
    # ours: connectors and guards
    control_url: str | None = None  # local: `dynamo.deploy run` control endpoint
    prefill_component: str | None = None  # DGD service names (default: found by name)
    decode_component: str | None = None
    dgd_name: str | None = None  # kubernetes: $DYN_PARENT_DGD_K8S_NAME
    kube_namespace: str | None = None  # kubernetes: $POD_NAMESPACE
    kubeconfig: str | None = None  # kubernetes, outside a cluster: $KUBECONFIG
    # kubernetes without the operator (`dynamo.deploy render`): scale the Deployments this label selector
    # finds, not a DGD ($DYN_PLANNER_DEPLOYMENT_SELECTOR, which render sets)
    kube_deployment_selector: str | None = None
    # global-planner: the GlobalPlanner that applies this planner's decisions (Dynamo's hierarchical planner)
    global_planner_namespace: str | None = None
    global_planner_component: str = "GlobalPlanner"
    replica_ready_timeout_seconds: float = 600.0
    fpm_stale_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.ttft is not None:
            self.ttft_ms = self.ttft
        if self.itl is not None:
            self.itl_ms = self.itl
        self.namespace = self.namespace or "dynamo"
        if self.optimization_target != "sla":  # Dynamo: reactive targets run only the load loop
            self.enable_load_scaling, self.enable_throughput_scaling = True, False
        else:
            self.enable_load_scaling = True if self.enable_load_scaling is None else self.enable_load_scaling
            if self.enable_throughput_scaling is None:
                self.enable_throughput_scaling = True
        if self.scheduling.scale_interval_seconds is None:  # Dynamo: the gcd of the intervals of the loops on
            loops = [self.load_adjustment_interval_seconds]
            if self.enable_throughput_scaling:
                loops.append(self.throughput_adjustment_interval_seconds)
            self.scheduling.scale_interval_seconds = float(math.gcd(*(int(v * 1000) for v in loops))) / 1000 or 1.0
        self.validate()

    def validate(self) -> None:
        validation.validate(self)

    def min_for(self, role: str) -> int:
        value = self.prefill_min_endpoint if role == "prefill" else self.decode_min_endpoint
        return self.min_endpoint if value is None else value

    def max_for(self, role: str) -> int:
        value = self.prefill_max_endpoint if role == "prefill" else self.decode_max_endpoint
        value = self.max_endpoint if value is None else value
        return value if value >= 0 else 1 << 30

    def gpus_for(self, role: str) -> int:
        return self.prefill_engine_num_gpu if role == "prefill" else self.decode_engine_num_gpu

    @property
    def roles(self) -> tuple[str, ...]:
        """Pools this planner scales: agg and decode modes scale one pool (called decode)."""
        return {"disagg": ("prefill", "decode"), "prefill": ("prefill",)}.get(self.mode, ("decode",))


def load_config(text: str, args: PlannerArgs | None = None) -> PlannerConfig:
    """Parse inline JSON or a .json/.yaml file, in our keys or Dynamo's (its profiler's dump). With `args`
    (the planner process starting): env-provided settings fill unset fields, Dynamo's fields with no effect
    here that ask for something are named in one warning, and a CA bundle the config names must exist."""
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) if text.endswith((".yaml", ".yml")) else json.load(fh)
    else:
        raw = _inline_json(text)
    if args is None:
        return convert(raw)
    cfg, ignored = _convert(raw, args)
    if ignored:
        log.warning("planner: Dynamo 1.6.1 config fields accepted, no effect here: %s", ", ".join(ignored))
    bundle = cfg.metric_pulling_prometheus_ca_bundle
    if bundle is not None and not os.path.isfile(bundle):  # checked where it runs: a pod's mount is not here
        raise ValueError(f"metric_pulling_prometheus_ca_bundle path does not exist or is not a file: {bundle!r}")
    return cfg


def _inline_json(text: str) -> object:
    """`--config` given as JSON. Text that is no JSON and does not open like JSON was meant as a path: say that
    the file is missing rather than how JSON parsing failed on the path's characters."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if text.lstrip().startswith(("{", "[")):
            raise
        raise FileNotFoundError(f"no such file: {text}") from None


def convert(raw: object) -> PlannerConfig:
    """A config object (our keys or Dynamo's) as the planner reads it, without the environment: the one
    reading `dynamo.deploy` and the profiler check manifests and requests with."""
    return _convert(raw, None)[0]


def _convert(raw: object, args: PlannerArgs | None) -> tuple[PlannerConfig, list[str]]:
    if not isinstance(raw, dict):
        raise ValueError("planner config must be an object")
    raw, ignored = dynamo_schema.to_ours(raw, PlannerConfig.__struct_fields__)
    if args is not None:
        raw = _with_env(raw, args)
    try:
        return msgspec.convert(raw, PlannerConfig), ignored
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None


def _fill(raw: dict, key: str, value: object) -> None:
    """`value` where the config leaves `key` unset: absent or null (null in a field of Dynamo's that is not
    Optional was refused before; in ours, and in Dynamo's Optional fields, it means the default)."""
    if raw.get(key) is None and value is not None:
        raw[key] = value


def _with_env(raw: dict, args: PlannerArgs) -> dict:
    """Fields the config leaves unset, from the process's flags and environment (Dynamo's variables)."""
    if args.control_url:
        raw = under_deploy_run(raw, args)  # which settles prometheus_endpoint (never a cluster address)
    else:
        _fill(raw, "prometheus_endpoint", args.prometheus_endpoint or None)
    _fill(raw, "profile_results_dir", args.profile_results_dir or None)
    _fill(raw, "namespace", args.namespace or None)
    for name in ("dgd_name", "kube_namespace", "kubeconfig", "kube_deployment_selector"):
        _fill(raw, name, getattr(args, name) or None)
    _fill(raw, "metric_reporting_prometheus_port", args.prometheus_port or None)
    prom = {"token": args.prometheus_token, "token_file": args.prometheus_token_file,
            "ca_bundle": args.prometheus_ca_bundle,
            "request_timeout_seconds": args.prometheus_request_timeout_seconds}
    if args.prometheus_ssl_verify is not None:  # Dynamo's reading of PROMETHEUS_SSL_VERIFY
        prom["ssl_verify"] = args.prometheus_ssl_verify.lower() in ("1", "true", "yes")
    if args.prometheus_extra_query_params:  # as Dynamo: a URL query string, malformed text refused
        prom["extra_query_params"] = dict(parse_qsl(args.prometheus_extra_query_params, strict_parsing=True))
    for key, value in prom.items():
        _fill(raw, f"metric_pulling_prometheus_{key}", value)
    return raw


def dumpable(cfg: PlannerConfig) -> dict:
    """The effective config for `--dump-config-to`, the bearer token hidden."""
    out = msgspec.to_builtins(cfg)
    if out.get("metric_pulling_prometheus_token"):
        out["metric_pulling_prometheus_token"] = REDACTED
    return out


def cluster_internal(url: str | None) -> bool:
    """A Kubernetes service address (`*.svc`, `*.svc.cluster.local`): it resolves only in a cluster."""
    host = urlsplit(url or "").hostname or ""
    return host.endswith((".svc", ".svc.cluster.local"))


def under_deploy_run(raw: dict, args: PlannerArgs) -> dict:
    """The operator contract, locally: a planner started by `python -m dynamo.deploy run` scales the local
    graph, whatever its config says for a cluster. `kubernetes` (the default) maps to `local` with the
    injected control URL; Prometheus is what `run` was given, never a cluster-internal address; the profile
    data is read where `run` put its copy of the mount (`DYN_PLANNER_PROFILE_RESULTS_DIR`, mapped by `run`).
    Each mapping is logged once."""
    raw = dict(raw)
    env = raw.get("environment", "kubernetes")
    if env == "kubernetes":
        log.info("planner: environment 'kubernetes' -> 'local': started by `dynamo.deploy run`, so the graph's "
                 "replicas are its supervisor's; scaling through %s", args.control_url)
        raw["environment"] = "local"
    if raw.get("environment") in ("local", "global-planner") and not raw.get("control_url"):
        raw["control_url"] = args.control_url  # global-planner: its own graph is read through it
    local_prom = "" if cluster_internal(args.prometheus_endpoint) else args.prometheus_endpoint
    prom = raw.get("prometheus_endpoint")
    if prom and cluster_internal(prom):
        log.info("planner: prometheus_endpoint %s is a cluster address; under `dynamo.deploy run` using %s",
                 prom, local_prom or "none")
        prom = None
    raw["prometheus_endpoint"] = prom or local_prom or None
    local_profile = args.profile_results_dir
    if local_profile and raw.get("profile_results_dir") not in (None, local_profile):
        log.info("planner: profile_results_dir %s is the pod's mount; under `dynamo.deploy run` reading its local "
                 "copy %s", raw["profile_results_dir"], local_profile)
        raw["profile_results_dir"] = local_profile
    return raw

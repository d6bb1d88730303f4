"""DynamoGraphDeploymentRequest `nvidia.com/v1alpha1`, the form Dynamo's guides used before 1.0
(SLA, workload and sweep settings inside one free-form `profilingConfig.config`), which Dynamo
1.6's operator still serves by converting it to v1beta1. Read here the same way: the mapping of
Dynamo's conversion (model, backend, autoApply, useMocker, profilerImage, sla, isl/osl, modelCache,
planner, profiling-job resources), and beyond it the keys that have a home in v1beta1 or in the
profiler's settings (sweep strategy, GPU SKU, GPUs per node and per engine, interpolation
granularity, deployment timeout, DGD metadata). Every other key is named in a note, never dropped
silently. The whole `config` is kept in the annotation Dynamo keeps it in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "nvidia.com/v1alpha1"
CONFIG_ANNOTATION = "nvidia.com/dgdr-profiling-config"  # Dynamo's: the v1alpha1 config, verbatim
SPEC_FIELDS = {"model", "backend", "useMocker", "enableGpuDiscovery", "profilingConfig", "autoApply",
               "deploymentOverrides"}
OLD_SLA_DEFAULTS = {"ttft": 50.0, "itl": 10.0}  # the pre-1.0 profiler's, when only one was given
# Pre-1.0 planner flags whose PlannerConfig field has another name.
PLANNER_RENAMES = {"adjustment_interval": "throughput_adjustment_interval_seconds", "no_operation": "advisory",
                   "ttft": "ttft_ms", "itl": "itl_ms", "metric_pulling_prometheus_endpoint": "prometheus_endpoint",
                   "enable_loadbased_scaling": "enable_load_scaling",
                   "loadbased_adjustment_interval": "load_adjustment_interval_seconds",
                   "loadbased_scaling_down_sensitivity": "load_scaling_down_sensitivity",
                   "loadbased_min_observations": "load_min_observations"}
PLANNER_GONE = {"log_dir", "no_correction", "loadbased_router_metrics_url", "loadbased_learning_window",
                "loadbased_metric_samples", "isl", "osl", "profile_results_dir"}


@dataclass
class Converted:
    raw: dict[str, Any]  # a v1beta1 request
    notes: list[str] = field(default_factory=list)


def snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).replace("-", "_").lower()


def _get(section: Any, name: str) -> Any:
    """`section[name]` in camelCase or snake_case (the pre-1.0 profiler read both)."""
    if not isinstance(section, dict):
        return None
    return section[name] if name in section else section.get(snake(name))


def convert(raw: dict[str, Any]) -> Converted:
    spec = raw.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValueError("spec: expected an object")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise ValueError(f"invalid {API_VERSION} DynamoGraphDeploymentRequest: unknown spec field(s) "
                         f"{', '.join(unknown)}")
    out = Converted({"apiVersion": "nvidia.com/v1beta1", "kind": raw.get("kind"),
                     "metadata": dict(raw.get("metadata") or {})})
    new: dict[str, Any] = {"model": spec.get("model", ""), "autoApply": bool(spec.get("autoApply", False))}
    if spec.get("backend"):
        new["backend"] = spec["backend"]
    if spec.get("useMocker"):
        new.setdefault("features", {})["mocker"] = {"enabled": True}
    if spec.get("enableGpuDiscovery"):
        out.notes.append("spec.enableGpuDiscovery: GPUs are not discovered here; give spec.hardware")
    pc = spec.get("profilingConfig") or {}
    _profiling_config(pc, new, out)
    _deployment_overrides(spec.get("deploymentOverrides") or {}, pc, new, out)
    out.raw["spec"] = new
    return out


def _profiling_config(pc: dict[str, Any], new: dict[str, Any], out: Converted) -> None:
    if pc.get("profilerImage"):
        new["image"] = pc["profilerImage"]
    for key, why in (("configMapRef", "a base DGD in a ConfigMap is not read; put per-service changes in "
                      "spec.overrides.dgd"), ("outputPVC", "results go to the profiler's --output-dir")):
        if pc.get(key):
            out.notes.append(f"spec.profilingConfig.{key}: not used here ({why})")
    job: dict[str, Any] = {}
    if pc.get("resources"):
        job["containers"] = [{"resources": pc["resources"]}]
    if pc.get("tolerations"):
        job["tolerations"] = pc["tolerations"]
    if job:
        new.setdefault("overrides", {})["profilingJob"] = {"template": {"spec": job}}
    config = pc.get("config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise ValueError("spec.profilingConfig.config: expected an object")
    for key in ("sla", "sweep", "hardware", "engine", "deployment", "planner"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise ValueError(f"spec.profilingConfig.config.{key}: expected an object")
    annotations = dict(out.raw["metadata"].get("annotations") or {})  # the caller's document stays as it was
    annotations[CONFIG_ANNOTATION] = json.dumps(config, sort_keys=True)
    out.raw["metadata"]["annotations"] = annotations
    _sla(config.get("sla") or {}, new, out)
    _search(config, new, out)
    _model_cache(_get(config.get("deployment"), "modelCache") or {}, new)
    if isinstance(config.get("planner"), dict) and config["planner"]:
        new.setdefault("features", {})["planner"] = planner_config(config["planner"], out.notes)
    engine = config.get("engine") or {}
    if engine.get("backend") and "backend" not in new:
        new["backend"] = engine["backend"]
    _note_unused(config, out.notes)


def _sla(sla: dict[str, Any], new: dict[str, Any], out: Converted) -> None:
    targets = {k: _number(sla, k, float) for k in ("ttft", "itl") if sla.get(k) is not None}
    if len(targets) == 1:  # v1beta1 takes both or neither; the old profiler defaulted the other
        other = "itl" if "ttft" in targets else "ttft"
        targets[other] = OLD_SLA_DEFAULTS[other]
        out.notes.append(f"profilingConfig.config.sla.{other}: not given; {OLD_SLA_DEFAULTS[other]:g} ms, "
                         "the pre-1.0 profiler's default")
    if sla.get("optimizationType") in ("latency", "throughput"):
        targets["optimizationType"] = sla["optimizationType"]
    if targets:
        new["sla"] = targets
    workload = {k: _number(sla, k, int) for k in ("isl", "osl") if sla.get(k) is not None}
    if workload:
        new["workload"] = workload


def _number(section: dict[str, Any], key: str, kind: type):
    try:
        return kind(section[key])
    except (TypeError, ValueError):
        raise ValueError(f"spec.profilingConfig.config.sla.{key}: expected a number (milliseconds or tokens), "
                         f"got {section[key]!r}") from None


def _search(config: dict[str, Any], new: dict[str, Any], out: Converted) -> None:
    sweep, hardware = config.get("sweep") or {}, config.get("hardware") or {}
    use_aic = _get(sweep, "useAiConfigurator")
    if use_aic is None:
        out.notes.append("profilingConfig.config.sweep.useAiConfigurator: not given; rapid search "
                         "(AIConfigurator), as Dynamo 1.6 converts it (false asks for thorough)")
    else:
        new["searchStrategy"] = "rapid" if use_aic else "thorough"
    hw: dict[str, Any] = {}
    system = _get(sweep, "aicSystem")
    if system:
        hw["gpuSku"] = str(system).lower()
    if _get(hardware, "numGpusPerNode"):
        hw["numGpusPerNode"] = int(_get(hardware, "numGpusPerNode"))
    if hw:
        new["hardware"] = hw


def _model_cache(cache: dict[str, Any], new: dict[str, Any]) -> None:
    mapped = {"pvcName": cache.get("pvcName"),
              "pvcModelPath": cache.get("modelPathInPvc") or cache.get("pvcPath"),
              "pvcMountPath": cache.get("pvcMountPath") or cache.get("mountPath")}
    mapped = {k: v for k, v in mapped.items() if v}
    if mapped:
        new["modelCache"] = mapped


def _deployment_overrides(over: dict[str, Any], pc: dict[str, Any], new: dict[str, Any], out: Converted) -> None:
    meta = {k: over[k] for k in ("name", "namespace", "labels", "annotations") if over.get(k)}
    if meta:  # the generated DGD's metadata, as a partial DGD merged over ours
        new.setdefault("overrides", {})["dgd"] = {"metadata": meta}
    if over.get("workersImage") and not pc.get("profilerImage"):
        new["image"] = over["workersImage"]  # as Dynamo's conversion


def planner_config(old: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Pre-1.0 planner settings (`plannerMinEndpoint`, `adjustment-interval`, ...) as PlannerConfig
    fields, with that planner's behaviour as the default (SLA target, throughput loop only); a setting
    the planner no longer has is named in a note and left out."""
    # The pre-1.0 planner was the SLA planner: its predictive throughput loop, the load loop only on request.
    new: dict[str, Any] = {"optimization_target": "sla", "enable_load_scaling": False}
    for key, value in old.items():
        name = _planner_field(key)
        if name in PLANNER_GONE:
            notes.append(f"profilingConfig.config.planner.{key}: the planner has no such setting now; left out")
        elif snake(key).removeprefix("planner_") == "disable_throughput_scaling":
            new[name] = not value  # the old planner's spelling of the opposite
        else:
            new[name] = value
    return new


def _planner_field(key: str) -> str:
    """The PlannerConfig field a pre-1.0 planner key becomes (a key the planner lost: its bare snake_case name)."""
    name = snake(key)
    name = name[len("planner_"):] if name.startswith("planner_") else name
    return "enable_throughput_scaling" if name == "disable_throughput_scaling" else PLANNER_RENAMES.get(name, name)


def _annotated_config(annotations: dict[str, str] | None) -> dict:
    """The v1alpha1 config the conversion kept in its annotation; {} when absent, not JSON or not an object (a
    hand-written annotation: the problem is then reported at spec.features.planner)."""
    text = (annotations or {}).get(CONFIG_ANNOTATION)
    try:
        config = json.loads(text) if text else None
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def planner_problem(problem: str, annotations: dict[str, str] | None) -> str:
    """A problem the planner finds in its config (`unknown field `foo_bar``, `... - at
    `$.throughput_adjustment_interval_seconds``), where the user wrote it: for a request read from v1alpha1,
    at the key of `profilingConfig.config.planner` it came from, by that key's name (`fooBar`,
    `adjustmentInterval`); else at `spec.features.planner`."""
    planner = _annotated_config(annotations).get("planner")
    if not isinstance(planner, dict):
        return f"spec.features.planner: {problem}"
    keys = {_planner_field(key): key for key in planner}
    for token in re.findall(r"`\$?\.?([A-Za-z_]\w*)[^`]*`", problem):
        if token in keys:
            written = re.sub(rf"`(\$\.)?{token}\b", lambda m, key=keys[token]: f"`{m.group(1) or ''}{key}", problem)
            return f"spec.profilingConfig.config.planner.{keys[token]}: {written}"
    return f"spec.profilingConfig.config.planner: {problem}"


# Keys read above or by `profiler_settings`; anything else in the config is reported as unused.
_READ = {"sla": {"ttft", "itl", "isl", "osl", "optimizationType"},
         "sweep": {"useAiConfigurator", "aicSystem", "prefillInterpolationGranularity",
                   "decodeInterpolationGranularity", "dryRun"},
         "hardware": {"numGpusPerNode", "minNumGpusPerEngine", "maxNumGpusPerEngine"},
         "engine": {"backend", "maxContextLength"},
         "deployment": {"modelCache", "deploymentTimeout", "model"},
         "planner": None, "deployment_ready_timeout_s": None}


_WHY = {"engine.config": "a base DGD file is not read; put per-service changes in spec.overrides.dgd",
        "deployment.dgdImage": "the generated DGD runs this image's dynamo",
        "outputDir": "results go to the profiler's --output-dir"}


def _note_unused(config: dict[str, Any], notes: list[str]) -> None:
    unused = [key for key in config if key not in _READ]
    for key, value in config.items():
        known = _READ.get(key)
        if known is not None and isinstance(value, dict):
            unused += [f"{key}.{k}" for k in value if k not in known | {snake(k) for k in known}]
    for key in unused:
        notes.append(f"profilingConfig.config.{key}: not used here" + (f" ({_WHY[key]})" if key in _WHY else ""))


def profiler_settings(annotations: dict[str, str] | None) -> dict[str, Any]:
    """Profiler settings (ProfilerArgs field names) that a v1alpha1 config set, from the kept config."""
    config = _annotated_config(annotations)
    sweep, hardware, engine = config.get("sweep") or {}, config.get("hardware") or {}, config.get("engine") or {}
    found = {"prefill_interpolation_granularity": _get(sweep, "prefillInterpolationGranularity"),
             "decode_interpolation_granularity": _get(sweep, "decodeInterpolationGranularity"),
             "dry_run": _get(sweep, "dryRun"), "max_context_length": _get(engine, "maxContextLength"),
             "deployment_timeout": _get(config.get("deployment"), "deploymentTimeout")
             or config.get("deployment_ready_timeout_s")}
    low, high = _get(hardware, "minNumGpusPerEngine") or 1, _get(hardware, "maxNumGpusPerEngine")
    if high:  # candidate TP sizes: the powers of two in [min, max], as the pre-1.0 sweep tried them
        found["tp_sizes"] = [t for t in (1, 2, 4, 8, 16, 32, 64) if int(low) <= t <= int(high)] or [int(high)]
    return {k: v for k, v in found.items() if v not in (None, 0)}

"""DynamoGraphDeploymentRequest `nvidia.com/v1beta1`: the typed request (model, SLA, workload,
hardware) with Dynamo's defaults and admission checks. Every finding names its field path. A
v1alpha1 request is read through `dgdr_v1alpha1`, as Dynamo's operator converts it."""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from dynamo.profiler import dgdr_v1alpha1, overrides

log = logging.getLogger("dynamo.profiler")

API_VERSION = "nvidia.com/v1beta1"
KIND = "DynamoGraphDeploymentRequest"
GPU_SKUS = ("vr_nvl72", "gb200", "b300_sxm", "b200_sxm", "h200_sxm", "h100_sxm", "h100_pcie", "a100_sxm",
            "a100_pcie", "a30", "l40s", "l40", "l4", "v100_sxm", "v100_pcie", "t4", "mi200", "mi300", "gb10")
MAX_DISCOVERED_GPUS = 32


class Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class ModelCache(Base):
    pvcName: str | None = None
    pvcModelPath: str | None = None
    pvcMountPath: str = "/opt/model-cache"


class Hardware(Base):
    gpuSku: str | None = None
    vramMb: float | None = None
    totalGpus: int | None = None
    numGpusPerNode: int | None = None
    interconnect: str | None = None
    rdma: bool | None = None


class Workload(Base):
    isl: int = 4000
    osl: int = 1000
    concurrency: float | None = None
    requestRate: float | None = None


class Sla(Base):
    ttft: float | None = None  # ms
    itl: float | None = None  # ms
    e2eLatency: float | None = None  # ms
    optimizationType: Literal["latency", "throughput"] | None = None

    @property
    def targets(self) -> tuple[float, float]:
        """(TTFT, ITL) targets in ms; Dynamo's defaults 2000/30 when neither is given."""
        if self.ttft is None and self.itl is None:
            return 2000.0, 30.0
        return float(self.ttft), float(self.itl)  # type: ignore[arg-type]


class Toggle(Base):
    enabled: bool = False


class Features(Base):
    planner: dict[str, Any] | None = None  # a raw PlannerConfig: passed through to the planner unvalidated
    kvRouter: Toggle | None = None
    mocker: Toggle | None = None


class Overrides(Base):
    profilingJob: dict[str, Any] | None = None
    trustRemoteCode: bool | None = None
    dgd: dict[str, Any] | None = None


class Spec(Base):
    model: str
    backend: Literal["auto", "sglang", "trtllm", "vllm"] = "auto"
    image: str | None = None
    runtimeVersionOverride: str | None = None
    searchStrategy: Literal["rapid", "thorough"] = "rapid"
    autoApply: bool = True
    modelCache: ModelCache | None = None
    hardware: Hardware = msgspec.field(default_factory=Hardware)
    workload: Workload = msgspec.field(default_factory=Workload)
    sla: Sla = msgspec.field(default_factory=Sla)
    features: Features = msgspec.field(default_factory=Features)
    overrides: Overrides | None = None

    @property
    def mocker(self) -> bool:
        return bool(self.features.mocker and self.features.mocker.enabled)

    @property
    def planner(self) -> bool:
        return self.features.planner is not None

    @property
    def kv_router(self) -> bool:
        return bool(self.features.kvRouter and self.features.kvRouter.enabled)


class Metadata(Base):
    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Request(Base):
    apiVersion: str
    kind: str
    metadata: Metadata
    spec: Spec


def _problems(req: Request) -> list[str]:
    s, out = req.spec, []
    if req.apiVersion != API_VERSION:
        out.append(f"apiVersion: must be {API_VERSION} (got {req.apiVersion!r})")
    if req.kind != KIND:
        out.append(f"kind: must be {KIND} (got {req.kind!r})")
    if not s.model.strip():
        out.append("spec.model: required")
    hw, wl, sla = s.hardware, s.workload, s.sla
    if hw.gpuSku is not None and hw.gpuSku not in GPU_SKUS:
        out.append(f"spec.hardware.gpuSku: {hw.gpuSku!r} is not one of {', '.join(GPU_SKUS)}")
    for name in ("vramMb", "totalGpus", "numGpusPerNode"):
        value = getattr(hw, name)
        if value is not None and value <= 0:
            out.append(f"spec.hardware.{name}: must be > 0 (got {value})")
    for name in ("isl", "osl"):
        if getattr(wl, name) <= 0:
            out.append(f"spec.workload.{name}: must be > 0 (got {getattr(wl, name)})")
    if wl.concurrency is not None and wl.requestRate is not None:
        out.append("spec.workload: give concurrency or requestRate, not both")
    for name in ("concurrency", "requestRate"):
        value = getattr(wl, name)
        if value is not None and value <= 0:
            out.append(f"spec.workload.{name}: must be > 0 (got {value})")
    if (sla.ttft is None) != (sla.itl is None):
        out.append("spec.sla: ttft and itl must be given together")
    if sla.e2eLatency is not None and sla.ttft is not None:
        out.append("spec.sla: give e2eLatency or ttft/itl, not both")
    for name in ("ttft", "itl", "e2eLatency"):
        value = getattr(sla, name)
        if value is not None and value <= 0:
            out.append(f"spec.sla.{name}: must be > 0 ms (got {value})")
    if s.overrides is not None and s.overrides.dgd is not None:
        out += overrides.problems(s.overrides.dgd)
    if s.searchStrategy == "thorough" and s.backend == "auto" and not s.mocker:
        out.append("spec.backend: thorough profiling needs a concrete backend (vllm, sglang or trtllm), not auto")
    return out


# Set by the API server: a request saved with `kubectl get dgdr NAME -o yaml` carries them.
SERVER_SET = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
              "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers", "ownerReferences", "generateName")
SKU_ALIASES = {"gb200_sxm": "gb200"}  # Dynamo's deprecated spelling


def _as_input(raw: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The request as written: the server's status and bookkeeping (an exported object) left out."""
    raw = {k: v for k, v in raw.items() if k != "status"}
    if isinstance(raw.get("metadata"), dict):
        raw["metadata"] = {k: v for k, v in raw["metadata"].items() if k not in SERVER_SET}
    hardware = (raw.get("spec") or {}).get("hardware") if isinstance(raw.get("spec"), dict) else None
    if isinstance(hardware, dict) and hardware.get("gpuSku") in SKU_ALIASES:
        sku = hardware["gpuSku"]
        notes.append(f"spec.hardware.gpuSku: {sku} is deprecated (Dynamo); read as {SKU_ALIASES[sku]}")
        raw["spec"] = {**raw["spec"], "hardware": {**hardware, "gpuSku": SKU_ALIASES[sku]}}
    return raw


def parse(raw: Any, notes: list[str] | None = None) -> Request:
    """A validated request from parsed YAML/JSON; ValueError listing every problem otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"a {KIND} must be a mapping, got {type(raw).__name__}")
    if "spec" not in raw and "model" in raw:  # a bare spec, as Dynamo's --config takes it
        raw = {"metadata": {"name": "dgdr"}, "spec": raw}
    said: list[str] = []
    raw = _as_input(raw, said)
    if raw.get("apiVersion") == dgdr_v1alpha1.API_VERSION:
        converted = dgdr_v1alpha1.convert(raw)
        said += [f"{dgdr_v1alpha1.API_VERSION}: {note}" for note in converted.notes]
        raw = converted.raw
    if notes is None:
        for note in said:
            log.warning("%s", note)
    else:
        notes += said
    raw = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "dgdr"}, **raw}
    try:
        req = msgspec.convert(raw, Request, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid {KIND}: {exc}") from None
    problems = _problems(req)
    if problems:
        raise ValueError(f"invalid {KIND}:\n  " + "\n  ".join(problems))
    return req


def to_dict(req: Request) -> dict[str, Any]:
    return msgspec.to_builtins(req)


def spec_digest(req: Request) -> str:
    import hashlib

    return hashlib.sha256(msgspec.json.encode(req.spec)).hexdigest()[:16]

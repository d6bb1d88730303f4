"""`nvidia.com/v1beta1` DynamoGraphDeployments (what Dynamo's profiler and planner now
write): `spec.components` is a list of `{name, type, replicas, podTemplate, ...}` whose
`podTemplate` is a native PodTemplateSpec with the Dynamo container named `main`.

`check(raw)` lists every problem with its v1beta1 path; `convert(raw)` maps a clean
document onto the v1alpha1-shaped `model.Graph` that `run` and `render` consume (the
operator's conversion webhook does the same mapping between the two served versions):
`type: prefill|decode` -> `componentType: worker` + `subComponentType`, `podTemplate`'s
`main` container -> `extraPodSpec.mainContainer`, other containers -> sidecars,
`sharedMemorySize` -> `sharedMemory`, `compilationCache` -> a PVC volume mount.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from dynamo.deploy.model import (
    IGNORED,
    API_VERSION_V1BETA1,
    Base,
    Container,
    EnvVar,
    ExtraPodSpec,
    Graph,
    Metadata,
    Multinode,
    PodMetadata,
    Restart,
    Service,
    _check_count,
    _check_kind,
    _check_replicas,
)
from dynamo.deploy.schema_walk import check_struct, join_path

MAIN_CONTAINER = "main"
COMPONENT_TYPES = ("frontend", "worker", "prefill", "decode", "planner", "epp")


class PodSpec(Base):
    """corev1.PodSpec: containers are checked, the rest passes through."""

    containers: list[Container]
    initContainers: Union[list[Any], None] = None
    volumes: Union[list[Any], None] = None
    nodeSelector: Union[dict[str, str], None] = None
    tolerations: Union[list[Any], None] = None
    affinity: Union[dict[str, Any], None] = None
    imagePullSecrets: Union[list[Any], None] = None
    serviceAccountName: Union[str, None] = None
    securityContext: Union[dict[str, Any], None] = None
    terminationGracePeriodSeconds: Union[int, None] = None
    priorityClassName: Union[str, None] = None
    runtimeClassName: Union[str, None] = None
    schedulerName: Union[str, None] = None
    hostNetwork: Union[bool, None] = None
    hostIPC: Union[bool, None] = None
    hostPID: Union[bool, None] = None
    dnsPolicy: Union[str, None] = None
    dnsConfig: Union[dict[str, Any], None] = None
    shareProcessNamespace: Union[bool, None] = None
    topologySpreadConstraints: Union[list[Any], None] = None
    resourceClaims: Union[list[Any], None] = None
    automountServiceAccountToken: Union[bool, None] = None
    enableServiceLinks: Union[bool, None] = None
    hostAliases: Union[list[Any], None] = None
    restartPolicy: Union[str, None] = None


class PodTemplate(Base):
    metadata: Union[PodMetadata, None] = None
    spec: Union[PodSpec, None] = None


class CompilationCache(Base):
    pvcName: str
    mountPath: Union[str, None] = None


class Component(Base):
    """One entry of `spec.components` (DynamoComponentDeploymentSharedSpec, v1beta1)."""

    name: str
    type: Union[Literal["frontend", "worker", "prefill", "decode", "planner", "epp"], None] = None
    replicas: Union[int, None] = None
    podTemplate: Union[PodTemplate, None] = None
    multinode: Union[Multinode, None] = None
    sharedMemorySize: Union[str, int, None] = None
    globalDynamoNamespace: Union[bool, None] = None
    modelRef: Union[dict[str, Any], None] = None
    scalingAdapter: Union[dict[str, Any], None] = None
    compilationCache: Union[CompilationCache, None] = None
    runtimeVersionOverride: Union[str, None] = None
    minAvailable: Union[int, None] = None
    roles: Union[list[Any], None] = None
    frontendSidecar: Union[str, None] = None
    dynamoSidecar: Union[str, None] = None
    eppConfig: Union[dict[str, Any], None] = None
    topologyConstraint: Union[dict[str, Any], None] = None
    experimental: Union[dict[str, Any], None] = None
    providerOverride: Union[dict[str, Any], None] = None


class Spec(Base):
    components: list[Component]
    env: Union[list[EnvVar], None] = None
    backendFramework: Union[Literal["sglang", "vllm", "trtllm"], None] = None
    annotations: Union[dict[str, str], None] = None
    labels: Union[dict[str, str], None] = None
    priorityClassName: Union[str, None] = None
    restart: Union[Restart, None] = None
    topologyConstraint: Union[dict[str, Any], None] = None
    experimental: Union[dict[str, Any], None] = None
    providerOverride: Union[dict[str, Any], None] = None


class GraphB(Base):
    apiVersion: str
    kind: str
    metadata: Metadata
    spec: Spec
    status: Union[dict[str, Any], None] = None


def is_v1beta1(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("apiVersion") == API_VERSION_V1BETA1


def main_index(component: Any) -> int | None:
    """Index of the container named `main` in a raw component, if any."""
    spec = ((component.get("podTemplate") or {}).get("spec") or {}) if isinstance(component, dict) else {}
    containers = spec.get("containers") if isinstance(spec, dict) else None
    for i, c in enumerate(containers if isinstance(containers, list) else []):
        if isinstance(c, dict) and c.get("name") == MAIN_CONTAINER:
            return i
    return None


def check(raw: Any) -> list[tuple[str, str]]:
    """Every schema problem of one v1beta1 document as (path, message)."""
    errors: list[tuple[str, str]] = []
    check_struct(raw, GraphB, "", errors)
    if not isinstance(raw, dict):
        return errors
    _check_kind(raw, errors)
    comps = (raw.get("spec") or {}).get("components") if isinstance(raw.get("spec"), dict) else None
    if not isinstance(comps, list):
        return errors
    _check_count("spec.components", len(comps), "component", errors)
    seen: set[str] = set()
    for i, comp in enumerate(comps):
        if not isinstance(comp, dict):
            continue
        where = join_path("spec.components", i)
        name = comp.get("name")
        if isinstance(name, str):
            if name.lower() in seen:
                errors.append((f"{where}.name", f"duplicate component name {name!r} (names are case-insensitive)"))
            seen.add(name.lower())
        _check_replicas(where, comp.get("replicas"), errors)
        if main_index(comp) is None:
            errors.append((f"{where}.podTemplate.spec.containers",
                           f"a container named {MAIN_CONTAINER!r} is required (the operator injects into it)"))
    return errors


def _service(comp: Component) -> dict[str, Any]:
    """One v1alpha1-shaped service dict for `comp`."""
    template = comp.podTemplate or PodTemplate()
    spec = template.spec or PodSpec(containers=[])
    pod = msgspec.to_builtins(spec)
    containers = pod.pop("containers", [])
    main = next(c for c in containers if c.get("name") == MAIN_CONTAINER)
    sidecars = [c for c in containers if c is not main]
    extra: dict[str, Any] = {k: v for k, v in pod.items() if k in _EXTRA_POD_FIELDS}
    extra["mainContainer"] = main
    if sidecars:
        extra["containers"] = sidecars
    svc: dict[str, Any] = {"extraPodSpec": extra}
    if comp.type in ("prefill", "decode"):
        svc["componentType"], svc["subComponentType"] = "worker", comp.type
    elif comp.type is not None:
        svc["componentType"] = comp.type
    meta = template.metadata
    if meta is not None and (meta.annotations or meta.labels):
        svc["extraPodMetadata"] = msgspec.to_builtins(meta)
    for key in ("replicas", "globalDynamoNamespace", "modelRef"):
        value = getattr(comp, key)
        if value is not None:
            svc[key] = value
    if comp.multinode is not None:
        svc["multinode"] = msgspec.to_builtins(comp.multinode)
    if comp.scalingAdapter is not None:
        svc["scalingAdapter"] = {"disable": False}
    if comp.sharedMemorySize is not None:
        size = str(comp.sharedMemorySize)
        svc["sharedMemory"] = {"disabled": True} if size == "0" else {"size": size}
    if comp.compilationCache is not None:
        cache = comp.compilationCache
        svc["volumeMounts"] = [{"name": cache.pvcName, "mountPoint": cache.mountPath or "/root/.cache/vllm",
                                "useAsCompilationCache": True}]
    return svc


# PodSpec fields the v1alpha1 ExtraPodSpec also carries (the rest are dropped with a warning).
_EXTRA_POD_FIELDS = tuple(f.name for f in msgspec.structs.fields(ExtraPodSpec)
                          if f.name not in ("mainContainer", "containers"))


def dropped_fields(raw: Any) -> list[str]:
    """v1beta1 fields `run`/`render` do not carry over, as warnings with their paths. Reads
    any document, not only clean ones, so that a run with schema errors lists them too."""
    spec = _mapping(raw.get("spec") if isinstance(raw, dict) else None)
    comps = spec.get("components")
    out = []
    for i, comp in enumerate(comps if isinstance(comps, list) else []):
        if isinstance(comp, dict):
            out += _dropped_component(i, comp)
    for key in ("topologyConstraint", "experimental", "providerOverride"):  # `restart`: rendered (rollout.py)
        if spec.get(key) is not None:
            out.append(f"spec.{key}: {IGNORED}")
    return out


def _dropped_component(i: int, comp: dict[str, Any]) -> list[str]:
    out = []
    for key in _mapping(_mapping(comp.get("podTemplate")).get("spec")):
        if key != "containers" and key not in _EXTRA_POD_FIELDS:
            out.append(f"spec.components[{i}].podTemplate.spec.{key}: not rendered")
    for key in ("roles", "frontendSidecar", "dynamoSidecar", "eppConfig", "topologyConstraint", "experimental",
                "providerOverride"):
        if comp.get(key) is not None:
            out.append(f"spec.components[{i}].{key}: {IGNORED}")
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def component_service(comp: dict[str, Any]) -> Service:
    """The v1alpha1-shaped service of one raw component, for `validate` to check its command
    line when the document has schema problems (it passes the component without its faulty fields)."""
    return msgspec.convert(_service(msgspec.convert(comp, Component)), Service)


def convert(raw: dict[str, Any]) -> Graph:
    """The internal (v1alpha1-shaped) graph of a v1beta1 document that `check` found clean."""
    doc = msgspec.convert(raw, GraphB)
    services = {comp.name: _service(comp) for comp in doc.spec.components}
    spec: dict[str, Any] = {"services": services}
    if doc.spec.env:
        spec["envs"] = msgspec.to_builtins(doc.spec.env)
    if doc.spec.backendFramework:
        spec["backendFramework"] = doc.spec.backendFramework
    for key in ("restart", "topologyConstraint"):
        value = getattr(doc.spec, key)
        if value is not None:
            spec[key] = msgspec.to_builtins(value)
    metadata = msgspec.to_builtins(doc.metadata)
    if doc.spec.annotations:  # graph-wide annotations apply to every component
        metadata["annotations"] = {**doc.spec.annotations, **metadata.get("annotations", {})}
    return msgspec.convert({"apiVersion": doc.apiVersion, "kind": doc.kind, "metadata": metadata, "spec": spec},
                           Graph)


def paths(raw: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{component name: (component path, main container path)} for messages."""
    out = {}
    for i, comp in enumerate(raw["spec"]["components"]):
        where = f"spec.components[{i}]"
        out[comp["name"]] = (where, f"{where}.podTemplate.spec.containers[{main_index(comp)}]")
    return out
